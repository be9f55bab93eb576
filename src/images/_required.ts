/**
 * Required-field check for parsed messages. protobuf-es parses proto2 messages that lack required
 * fields without complaint, but CRIU (protobuf-c) and crit (python protobuf) refuse them, so an image
 * that passes our reader must have every required field, nested ones included.
 */

import { type DescField, type DescMessage, isFieldSet, type Message } from "@bufbuild/protobuf";
import { FeatureSet_FieldPresence } from "@bufbuild/protobuf/wkt";

interface Plan {
  required: DescField[];
  /** Message-typed fields (singular or repeated) whose contents need checking too. */
  nested: DescField[];
}

const plans = new WeakMap<DescMessage, Plan>();

function planFor(schema: DescMessage): Plan {
  let plan = plans.get(schema);
  if (plan === undefined) {
    plan = {
      required: schema.fields.filter((f) => f.presence === FeatureSet_FieldPresence.LEGACY_REQUIRED),
      nested: schema.fields.filter((f) =>
        f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message")
      ),
    };
    plans.set(schema, plan);
  }
  return plan;
}

/** The dotted path of the first required field missing in `msg` (or below it), or undefined. */
export function missingRequired(schema: DescMessage, msg: Message): string | undefined {
  const plan = planFor(schema);
  for (const f of plan.required) {
    if (!isFieldSet(msg, f)) return f.name;
  }
  const values = msg as unknown as Record<string, unknown>;
  for (const f of plan.nested) {
    const sub = f.message;
    if (sub === undefined) continue;
    if (f.fieldKind === "list") {
      const list = values[f.localName] as Message[];
      for (let i = 0; i < list.length; i++) {
        const miss = missingRequired(sub, list[i] as Message);
        if (miss !== undefined) return `${f.name}[${i}].${miss}`;
      }
    } else if (isFieldSet(msg, f)) {
      const miss = missingRequired(sub, values[f.localName] as Message);
      if (miss !== undefined) return `${f.name}.${miss}`;
    }
  }
  return undefined;
}
