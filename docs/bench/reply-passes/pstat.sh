#!/usr/bin/env bash
# Per-process system calls, context switches and CPU of `veltix bench reqrep` (64 in flight,
# current-thread runtime): `perf stat -p` of the bench process (client) and of its server
# child for 2 s in the middle of a 4,000,000-request run. Usage: pstat.sh VELTIX_BINARY
set -euo pipefail
"$1" bench reqrep --in-flight 64 --runs 1 --count 4000000 --reqrep-api async-current-thread > /tmp/pstat-bench.out 2>&1 &
B=$!
sleep 3.5
S=$(pgrep -P $B | head -1)
EV='syscalls:sys_enter_sendto,syscalls:sys_enter_write,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,syscalls:sys_enter_sched_yield,context-switches,task-clock'
perf stat -e $EV -p $B -o /tmp/pstat-client.txt -- sleep 2 &
perf stat -e $EV -p $S -o /tmp/pstat-server.txt -- sleep 2 &
wait $B
wait
echo "== client (bench process)"; grep -E "syscalls|context|task-clock" /tmp/pstat-client.txt
echo "== server (--internal-server child)"; grep -E "syscalls|context|task-clock" /tmp/pstat-server.txt
grep "throughput  " /tmp/pstat-bench.out
