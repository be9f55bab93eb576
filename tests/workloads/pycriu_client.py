#!/usr/bin/python3
"""Drives a criu through Debian's pycriu, for tests/rpc_test.ts.

Usage: pycriu_client.py JSON, where JSON is an object with
  criu      path of the criu binary to start as `criu swrk FD` (pycriu's use_binary), or
  socket    path of a `criu service` socket (pycriu's use_sk)
  action    "check", "dump", "restore" (pycriu's own methods), or "raw"
  type      for "raw": a criu_req_type name (VERSION, DUMP, ...) or a number
  images    a directory to pass as images_dir_fd (opened here, as a real client does)
  opts      other criu_opts fields, by their proto names
  fail_at   for "raw": answer this notification with notify_success = false

Prints one JSON object: {"ok": ..., "resp": the final reply, "notifications": [...], "error": ...}.
"""
import json
import os
import sys

import pycriu
import pycriu.rpc_pb2 as rpc
from google.protobuf.json_format import MessageToDict


def as_dict(msg):
    return MessageToDict(msg, preserving_proto_field_name=True)


def raw(c, args, needs_opts):
    """Sends one request over pycriu's own connection and answers notifications."""
    req = rpc.criu_req()
    typ = args["type"]
    req.type = typ if isinstance(typ, int) else rpc.criu_req_type.Value(typ)
    if needs_opts:
        req.opts.MergeFrom(c.opts)
    if "pid" in args:
        req.pid = args["pid"]
    sk = c._comm.connect(False)
    notifications = []
    out = {}
    try:
        sk.send(req.SerializeToString())
        while True:
            buf = sk.recv(1 << 20)
            if not buf:
                out["error"] = "criu closed the connection without a final reply"
                break
            resp = rpc.criu_resp()
            resp.ParseFromString(buf)
            if resp.type != rpc.NOTIFY:
                out["resp"] = as_dict(resp)
                out["ok"] = resp.success
                break
            note = {"script": resp.notify.script}
            if resp.notify.HasField("pid"):
                note["pid"] = resp.notify.pid
            notifications.append(note)
            answer = rpc.criu_req()
            answer.type = rpc.NOTIFY
            answer.notify_success = resp.notify.script != args.get("fail_at")
            sk.send(answer.SerializeToString())
    finally:
        c._comm.disconnect()
    out["notifications"] = notifications
    return out


def main():
    args = json.loads(sys.argv[1])
    c = pycriu.criu()
    if "socket" in args:
        c.use_sk(args["socket"])
    else:
        c.use_binary(args["criu"])
    needs_opts = False
    if "images" in args:
        c.opts.images_dir_fd = os.open(args["images"], os.O_DIRECTORY)
        needs_opts = True
    for name, value in args.get("opts", {}).items():
        setattr(c.opts, name, value)
        needs_opts = True
    if needs_opts and not c.opts.HasField("images_dir_fd"):
        c.opts.images_dir_fd = -1

    out = {"ok": True}
    try:
        action = args["action"]
        if action == "check":
            c.check()
        elif action == "dump":
            out["resp"] = as_dict(c.dump())
        elif action == "restore":
            out["resp"] = as_dict(c.restore())
        elif action == "raw":
            out = raw(c, args, needs_opts)
        else:
            raise ValueError("unknown action " + action)
    except pycriu.CRIUExceptionExternal as e:
        out = {"ok": False, "error": str(e), "errno": e.errno}
    except pycriu.CRIUException as e:
        out = {"ok": False, "error": str(e)}
    except OSError as e:  # connecting to the service socket, for one
        out = {"ok": False, "error": str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
