"""Where a Python send_and_wait to a Python route spends its time, in three legs (medians over
3,000 round trips on loopback, one process): caller -> handler start, the handler itself,
handler end -> caller has the reply. Run with the veltix_rs venv's python:

    target/py/veltix-rs/bin/python crates/veltix-py/bench/reqrep_legs.py
"""
import time, statistics, sys
import veltix_rs as vx
ECHO = vx.MessageType(230, "echo2")
s = vx.Server(vx.ServerConfig(host="127.0.0.1", port=0))
marks = []
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
a=[];b=[];d=[]
for i in range(3000):
    t0 = time.perf_counter()
    r = c.send_and_wait(vx.Request(ECHO, b"y"*32), timeout=5.0)
    t1 = time.perf_counter()
    h0, h1 = marks[-2], marks[-1]
    a.append((h0-t0)*1e6); b.append((h1-h0)*1e6); d.append((t1-h1)*1e6)
med=statistics.median
print("to handler %.1f  handler %.1f  back %.1f  total %.1f" % (med(a), med(b), med(d), med([x+y+z for x,y,z in zip(a,b,d)])))
c.disconnect(); s.close_all()
