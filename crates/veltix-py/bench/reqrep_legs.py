"""Where a Python send_and_wait to a Python route spends its time, in three legs (medians over
3,000 round trips on loopback, one process): caller -> handler start, the handler itself,
handler end -> caller has the reply. Run with the veltix_rs venv's python:

    target/py/veltix-rs/bin/python crates/veltix-py/bench/reqrep_legs.py [--label L] [--json FILE]

With --json the medians (and the CPU affinity, the VM's guest halt-poll setting and the load)
are appended as one JSON line to FILE, so runs under different settings can be compared.
"""
import argparse
import json
import os
import statistics
import time

import veltix_rs as vx

p = argparse.ArgumentParser()
p.add_argument("--label", default="")
p.add_argument("--json", default=None)
p.add_argument("--count", type=int, default=3000)
args = p.parse_args()

ECHO = vx.MessageType(230, "echo2")
s = vx.Server(vx.ServerConfig(host="127.0.0.1", port=0))
marks: list[float] = []


@s.route(ECHO)
def echo(client, response):
    marks.append(time.perf_counter())
    reply = vx.Request(ECHO, response.content)
    reply.respond(response)
    s.send(reply, client)
    marks.append(time.perf_counter())


s.start()
c = vx.Client(vx.ClientConfig(server_addr="127.0.0.1", port=s.port))
assert c.connect()
a, b, d, tot = [], [], [], []
for i in range(args.count):
    t0 = time.perf_counter()
    r = c.send_and_wait(vx.Request(ECHO, b"y" * 32), timeout=5.0)
    t1 = time.perf_counter()
    assert r is not None, "no reply"
    h0, h1 = marks[-2], marks[-1]
    a.append((h0 - t0) * 1e6)
    b.append((h1 - h0) * 1e6)
    d.append((t1 - h1) * 1e6)
    tot.append((t1 - t0) * 1e6)
c.disconnect()
s.close_all()
med = statistics.median
out = {"label": args.label, "to_handler_us": med(a), "handler_us": med(b), "back_us": med(d),
       "total_us": med(tot), "count": args.count, "cpus_allowed": len(os.sched_getaffinity(0)),
       "load": os.getloadavg()[0], "date_utc": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())}
try:
    with open("/sys/module/haltpoll/parameters/guest_halt_poll_ns") as f:
        out["guest_halt_poll_ns"] = int(f.read())
except OSError:
    out["guest_halt_poll_ns"] = None
print("%s to handler %.1f  handler %.1f  back %.1f  total %.1f" % (
    args.label, out["to_handler_us"], out["handler_us"], out["back_us"], out["total_us"]))
if args.json:
    with open(args.json, "a") as f:
        f.write(json.dumps(out) + "\n")
