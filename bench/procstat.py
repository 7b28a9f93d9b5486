#!/usr/bin/env python3
"""CPU time of a set of processes, for bench/operate.sh's healthcheck rows.

    procstat.py snap PID... > FILE   one line per PID: PID STAT_NS CHILDREN_NS TID:NS,TID:NS...
    procstat.py delta A B PID...     summed B - A of those PIDs: STAT_NS CHILDREN_NS SCHED_NS

STAT_NS is utime + stime of /proc/PID/stat: every thread of the process, also those that
exited meanwhile; the kernel keeps it in nanoseconds but prints clock ticks (1/CLK_TCK s), so
a difference is exact to one tick. CHILDREN_NS is cutime + cstime: the children the process
waited for (a shim's exec'd probe processes, runc). SCHED_NS comes from the first field of
/proc/PID/task/TID/schedstat, nanoseconds on the CPU, exact: the difference is summed per
thread over the threads alive in B (a thread born after A counts from 0); a thread that exited
between A and B is missing from it, so SCHED_NS can only be low. A missing PID counts 0.
"""
import os
import sys

TICK_NS = 1_000_000_000 // os.sysconf('SC_CLK_TCK')


def snap(pid):
    """(utime+stime ns, cutime+cstime ns, {tid: schedstat ns})"""
    try:
        with open(f'/proc/{pid}/stat') as f:
            # the command name may hold spaces and parentheses: split after the last ')'
            fields = f.read().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
        return (0, 0, {})
    # fields[0] is the state (field 3); utime..cstime are fields 14..17
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    threads = {}
    try:
        for tid in os.listdir(f'/proc/{pid}/task'):
            try:
                with open(f'/proc/{pid}/task/{tid}/schedstat') as f:
                    threads[tid] = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        pass
    return ((utime + stime) * TICK_NS, (cutime + cstime) * TICK_NS, threads)


def load(path):
    out = {}
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) >= 3:
                threads = dict(t.split(':') for t in p[3].split(',') if t) if len(p) > 3 else {}
                out[p[0]] = (int(p[1]), int(p[2]), {k: int(v) for k, v in threads.items()})
    return out


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == 'snap':
        for pid in sys.argv[2:]:
            stat, children, threads = snap(pid)
            print(pid, stat, children, ','.join(f'{t}:{n}' for t, n in threads.items()))
    elif len(sys.argv) >= 4 and sys.argv[1] == 'delta':
        a, b = load(sys.argv[2]), load(sys.argv[3])
        stat = children = sched = 0
        for pid in sys.argv[4:]:
            before, after = a.get(pid, (0, 0, {})), b.get(pid, (0, 0, {}))
            stat += after[0] - before[0]
            children += after[1] - before[1]
            sched += sum(ns - before[2].get(tid, 0) for tid, ns in after[2].items())
        print(stat, children, sched)
    else:
        sys.exit(__doc__)


main()
