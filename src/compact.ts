/**
 * Drops the keys whose value is undefined. Image messages have many optional fields; with
 * exactOptionalPropertyTypes an absent field must be left out, not set to undefined.
 */
export type Compact<T> = { [K in keyof T]?: Exclude<T[K], undefined> };

export function compact<T extends object>(o: T): Compact<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Compact<T>;
}
