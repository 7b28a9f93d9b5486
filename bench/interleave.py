#!/usr/bin/env python3
"""Times two commands interleaved and prints bench/run.sh's results.tsv rows for both and for
their difference.

    interleave.py ENGINE VIA JSON RUNS WARMUP LOAD0 KEY_A DESC_A CMD_A KEY_B DESC_B CMD_B KEY_D DESC_D

The commands run without a shell (split like a shell would, as `hyperfine -N` does), A then B,
then B then A, and so on, so that a drift in host load hits both alike; WARMUP pairs come first
and are not kept. Rows: A and B as median [min-max] ms, and A - B as the median of the
per-pair differences [min-max]. The times go to JSON. A failing command stops the measurement:
exit status 1, its stderr on ours.
"""
import json
import shlex
import statistics
import subprocess
import sys
import time


def once(argv):
    t = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t
    if p.returncode != 0:
        sys.stderr.write(f'{shlex.join(argv)}: exit {p.returncode}\n')
        sys.stderr.write(p.stderr.decode(errors='replace')[-2000:])
        sys.exit(1)
    return elapsed * 1000


def main():
    if len(sys.argv) != 15:
        sys.exit(__doc__)
    (eng, via, out, runs, warmup, load0, key_a, desc_a, cmd_a, key_b, desc_b, cmd_b, key_d,
     desc_d) = sys.argv[1:]
    runs, warmup = int(runs), int(warmup)
    argv = {'a': shlex.split(cmd_a), 'b': shlex.split(cmd_b)}
    times = {'a': [], 'b': []}
    for i in range(warmup + runs):
        for k in ('ab' if i % 2 == 0 else 'ba'):
            ms = once(argv[k])
            if i >= warmup:
                times[k].append(ms)
    with open(out, 'w') as f:
        json.dump({'a': cmd_a, 'b': cmd_b, 'ms': times}, f)
    with open('/proc/loadavg') as f:
        load1 = f.read().split()[0]
    diffs = [a - b for a, b in zip(times['a'], times['b'])]
    for key, desc, v in ((key_a, desc_a, times['a']), (key_b, desc_b, times['b']),
                         (key_d, desc_d, diffs)):
        print('\t'.join([eng, key, desc, '%.1f' % statistics.median(v), 'ms', '%.1f' % min(v),
                         '%.1f' % max(v), str(len(v)), f'{load0}>{load1}', via]))


main()
