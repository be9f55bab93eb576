#!/usr/bin/python3
"""Talks to `criu swrk` the way runc 1.1 does (libcontainer's criuSwrk), for tests/runc_test.ts.

runc starts one `criu swrk 3` per request, with its end of a SOCK_SEQPACKET socketpair at fd 3
and the files it wants criu to inherit at 4, 5, ...; sends one criu_req; answers every NOTIFY
with notify_success; reads the final criu_resp, then waits for criu to exit. A restored root
(rst_sibling) is this process's child, as the container's init is runc's.

Usage: runc_rpc_client.py JSON, an object with
  criu        the criu binary
  type        VERSION, FEATURE_CHECK, DUMP, RESTORE, PRE_DUMP...
  images      a directory passed as images_dir_fd; work: one passed as work_dir_fd
  opts        scalar criu_opts fields by their proto names
  ext_mnt     [[key, val], ...]; external: [...]; join_ns: [[ns, file], ...]
  inherit     [[key, path], ...]: each path opened (O_RDWR) and given to criu at fd 4, 5...
              as inherit_fd with that key
  features    {"mem_track": bool, "lazy_pages": bool} for FEATURE_CHECK

Prints one JSON object: ok, resp (the final reply), notifications ([script, pid?] in order),
fds_with (the scripts whose NOTIFY carried fds), criu_status (criu's exit status), and for a
restore, root_parent (the parent pid of the restored root, read before anything can reap it)
and client_pid (ours).
"""
import array
import json
import os
import socket
import subprocess
import sys

import pycriu.rpc_pb2 as rpc
from google.protobuf.json_format import MessageToDict


def as_dict(msg):
    return MessageToDict(msg, preserving_proto_field_name=True)


def build_request(args, keep):
    req = rpc.criu_req()
    req.type = rpc.criu_req_type.Value(args["type"])
    if args["type"] == "VERSION":
        return req, []
    opts = req.opts
    opts.images_dir_fd = -1
    if "images" in args:
        fd = os.open(args["images"], os.O_DIRECTORY)
        keep.append(fd)
        opts.images_dir_fd = fd
    if "work" in args:
        fd = os.open(args["work"], os.O_DIRECTORY)
        keep.append(fd)
        opts.work_dir_fd = fd
    for name, value in args.get("opts", {}).items():
        setattr(opts, name, value)
    for key, val in args.get("ext_mnt", []):
        m = opts.ext_mnt.add()
        m.key = key
        m.val = val
    for ext in args.get("external", []):
        opts.external.append(ext)
    for ns, path in args.get("join_ns", []):
        j = opts.join_ns.add()
        j.ns = ns
        j.ns_file = path
    extra = []
    for key, path in args.get("inherit", []):
        fd = os.open(path, os.O_RDWR)
        extra.append(fd)
        i = opts.inherit_fd.add()
        i.key = key
        i.fd = 3 + len(extra)
    for name, value in args.get("features", {}).items():
        setattr(req.features, name, value)
    return req, extra


def start_criu(criu, server, extra):
    """criu swrk 3, with `server` at fd 3 and `extra` at 4...; stdio are ours."""
    targets = [server] + extra

    def arrange():
        # Move every fd above the range first, then into place, as Go's ExtraFiles does.
        high = [os.dup(fd) for fd in targets]
        for i, fd in enumerate(high):
            os.dup2(fd, 3 + i)
            os.close(fd)

    return subprocess.Popen([criu, "swrk", "3"], preexec_fn=arrange, close_fds=False)


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def main():
    args = json.loads(sys.argv[1])
    keep = []
    req, extra = build_request(args, keep)
    client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = start_criu(args["criu"], server.fileno(), extra)
    server.close()
    # The inherited files are criu's now; the directories stay open until criu is done, as
    # runc's are: criu reaches them through /proc/OUR_PID/fd/N.
    for fd in extra:
        os.close(fd)
    out = {"ok": False, "notifications": [], "fds_with": []}
    client.send(req.SerializeToString())
    while True:
        fds = array.array("i")
        data, ancdata, _, _ = client.recvmsg(10 * 4096, socket.CMSG_SPACE(16 * fds.itemsize))
        if not data:
            out["error"] = "unexpected EOF"
            break
        resp = rpc.criu_resp()
        resp.ParseFromString(data)
        if not resp.success:
            out["resp"] = as_dict(resp)
            break
        if resp.type != rpc.NOTIFY:
            out["ok"] = True
            out["resp"] = as_dict(resp)
            break
        note = [resp.notify.script]
        if resp.notify.HasField("pid"):
            note.append(resp.notify.pid)
        out["notifications"].append(note)
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if len(fds) > 0:
            out["fds_with"].append(resp.notify.script)
            for fd in fds:
                os.close(fd)
        answer = rpc.criu_req()
        answer.type = rpc.NOTIFY
        answer.notify_success = True
        client.send(answer.SerializeToString())
    if out["ok"] and args["type"] == "RESTORE":
        pid = out["resp"]["restore"]["pid"]
        out["client_pid"] = os.getpid()
        out["root_parent"] = parent_of(pid)
    client.shutdown(socket.SHUT_WR)
    out["criu_status"] = proc.wait()
    client.close()
    for fd in keep:
        os.close(fd)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
