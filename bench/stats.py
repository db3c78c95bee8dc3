#!/usr/bin/env python3
"""The arithmetic and parsing behind bench/run.sh, in one tested place.

    python3 bench/stats.py SUBCOMMAND ARGS...

Standard library only. Each subcommand prints one line (or exits 0/1 for the
comparisons) in exactly the format bench/run.sh puts into its table; numbers
are read as awk reads them (a leading number, else 0) and formatted with
printf-style rounding. Unit tests: bench/test_stats.py.

Subcommands:
  median VALUE...                  median, %.2f
  range DECIMALS VALUE...          "LO-HI" with DECIMALS decimals
  ratio CASE BASE                  CASE / BASE, %.3f
  at-least VALUE MIN               exit 0 if VALUE >= MIN, else 1
  at-most VALUE MAX                exit 0 if VALUE <= MAX, else 1
  half-rate MAX_RPS CLIENTS        h2load --rps per client for half of MAX_RPS (at least 1)
  percentiles INFLIGHT LOG...      "P50_MS P99_MS" over h2load --log-file logs
  server-p99 BEFORE AFTER          revokd's own p99 from two /metrics snapshots
  metric-sum FILE NAME [LABEL_RE]  sum of the samples of NAME whose labels match
  child-ticks HZ TIMES_FILE        CPU ticks of finished children from bash's `times`
  foreign-pct BUSY OURS T0 T1 HZ NCPU
                                   percent of all CPUs used by others
  serving-addrs LOG                "GRPC_ADDR ADMIN_ADDR" from revokd's JSON log
                                   ("revokd serving" line); exit 1 if not there yet
  redis-preload N EXAT             N revocations as redis-cli --pipe commands
  mem-gib MEMINFO                  MemTotal as "N GiB"
"""

import json
import math
import re
import sys

_NUMBER = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")


def num(text):
    """A string as awk reads it as a number: its leading number, else 0."""
    m = _NUMBER.match(str(text))
    return float(m.group(1)) if m else 0.0


def median(values):
    v = sorted(num(x) for x in values)
    if not v:
        raise ValueError("median of nothing")
    n = len(v)
    return v[(n - 1) // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def value_range(values):
    v = sorted(num(x) for x in values)
    if not v:
        raise ValueError("range of nothing")
    return v[0], v[-1]


def half_rate(max_rps, clients):
    x = math.trunc(num(max_rps) / 2 / num(clients))
    return 1 if x < 1 else x


class BenchError(Exception):
    """A finding bench/run.sh stops on; the message is what it prints."""


def percentiles(inflight, paths):
    """Nearest-rank p50 and p99 in ms of the 3rd column (microseconds) of
    h2load --log-file logs. Status 0 marks a request whose answer headers came
    in the warm-up (h2load records no status then): up to INFLIGHT of them per
    log are fine; any other status but 200 is a failure."""
    durations = []
    append = durations.append
    bad = 0
    for path in paths:
        boundary = 0
        with open(path) as f:
            # Millions of lines in a full run: plain digits take a fast path.
            for line in f:
                fields = line.rstrip("\n").split("\t", 3)
                status = fields[1] if len(fields) > 1 else ""
                if status != "200":
                    status = num(status)
                    if status == 0:
                        boundary += 1
                        if boundary > inflight:
                            bad += 1
                    elif status != 200:
                        bad += 1
                duration = fields[2] if len(fields) > 2 else ""
                append(int(duration) if duration.isascii() and duration.isdigit() else num(duration))
    where = " ".join(paths)
    if bad:
        raise BenchError(f"{where}: requests with a status other than 200")
    n = len(durations)
    if n == 0:
        raise BenchError(f"{where}: empty log")
    durations.sort()
    i50 = (n * 50 + 99) // 100
    i99 = (n * 99 + 99) // 100
    return durations[i50 - 1] / 1000, durations[i99 - 1] / 1000


HISTOGRAM_BUCKET = "revokd_verify_duration_seconds_bucket{"


def buckets(text):
    """(le, value) of every verify-duration bucket line, in order."""
    out = []
    for line in text.splitlines():
        if line.startswith(HISTOGRAM_BUCKET):
            fields = line.split()
            le = re.sub(r'".*', "", re.sub(r'.*le="', "", fields[0]))
            out.append((le, fields[-1]))
    return out


def server_p99(before_text, after_text):
    """The upper bound (ms) of the bucket that holds the p99 of the
    verifications between two /metrics snapshots: "<= X", "> X" (beyond the
    last finite bound) or "n/a" (none). None if no bucket reaches it."""
    before = {le: num(v) for le, v in buckets(before_text)}
    after = {}
    order = []
    for le, v in buckets(after_text):
        after[le] = num(v)
        order.append(le)
    total = after.get("+Inf", 0.0) - before.get("+Inf", 0.0)
    if not order or total <= 0:
        return "n/a"
    for i, le in enumerate(order):
        if after.get(le, 0.0) - before.get(le, 0.0) >= 0.99 * total:
            if le == "+Inf":
                return "> %.3f" % (num(order[i - 1]) * 1000 if i > 0 else 0.0)
            return "<= %.3f" % (num(le) * 1000)
    return None


def metric_sum(text, name, label_re=""):
    pattern = re.compile("^" + name + r"(\{|$)")
    labels = re.compile(label_re) if label_re else None
    s = 0.0
    for line in text.splitlines():
        fields = line.split()
        if fields and pattern.search(fields[0]) and (labels is None or labels.search(fields[0])):
            s += num(fields[-1])
    return math.trunc(s)


def child_ticks(times_output, hz):
    """CPU ticks (user + system) of the finished children, from the output
    of bash's `times` (2nd line: children's "XmY.YYYs XmY.YYYs")."""
    lines = times_output.splitlines()
    if len(lines) < 2:
        return 0
    t = 0.0
    for field in lines[1].split()[:2]:
        minutes, _, seconds = field.partition("m")
        t += num(minutes) * 60 + num(seconds.replace("s", "", 1))
    return math.trunc(t * num(hz))


def foreign_pct(busy, ours, t0, t1, hz, ncpu):
    f = (num(busy) - num(ours)) / ((num(t1) - num(t0)) * num(hz) * num(ncpu)) * 100
    return "%.0f" % (0 if f < 0 else f)


def serving_addrs(text):
    """(grpc_addr, admin_addr) from revokd's "revokd serving" JSON log line,
    or None if it is not (yet) there."""
    for line in text.splitlines():
        try:
            v = json.loads(line)
        except ValueError:
            continue  # another format, or a line still being written
        if isinstance(v, dict) and v.get("message") == "revokd serving":
            return v["grpc_addr"], v["admin_addr"]
    return None


def redis_preload(n, exat):
    return "".join("SET revokd:jti:bench-revoked-%07d 1 EXAT %d\r\n" % (i, exat) for i in range(n))


def mem_gib(meminfo_text):
    """"N GiB" for every MemTotal line of /proc/meminfo (kB), as one string."""
    out = ""
    for line in meminfo_text.splitlines():
        if "MemTotal" in line:
            fields = line.split()
            out += "%.0f GiB" % (num(fields[1] if len(fields) > 1 else 0) / 1048576)
    return out


def read(path):
    with open(path) as f:
        return f.read()


def main(argv):
    if not argv:
        sys.exit(__doc__)
    cmd, args = argv[0], argv[1:]
    out = sys.stdout
    if cmd == "median":
        out.write("%.2f\n" % median(args))
    elif cmd == "range":
        lo, hi = value_range(args[1:])
        d = int(args[0])
        out.write("%.*f-%.*f\n" % (d, lo, d, hi))
    elif cmd == "ratio":
        out.write("%.3f\n" % (num(args[0]) / num(args[1])))
    elif cmd == "at-least":
        return 0 if num(args[0]) >= num(args[1]) else 1
    elif cmd == "at-most":
        return 0 if num(args[0]) <= num(args[1]) else 1
    elif cmd == "half-rate":
        out.write("%d\n" % half_rate(args[0], args[1]))
    elif cmd == "percentiles":
        try:
            p50, p99 = percentiles(int(args[0]), args[1:])
        except BenchError as e:
            sys.stderr.write(f"{e}\n")
            return 1
        out.write("%.3f %.3f\n" % (p50, p99))
    elif cmd == "server-p99":
        p99 = server_p99(read(args[0]), read(args[1]))
        if p99 is not None:
            out.write(p99 + "\n")
    elif cmd == "metric-sum":
        out.write("%d\n" % metric_sum(read(args[0]), args[1], args[2] if len(args) > 2 else ""))
    elif cmd == "child-ticks":
        out.write("%d\n" % child_ticks(read(args[1]), args[0]))
    elif cmd == "foreign-pct":
        out.write(foreign_pct(*args) + "\n")
    elif cmd == "serving-addrs":
        try:
            addrs = serving_addrs(read(args[0]))
        except FileNotFoundError:
            addrs = None
        if addrs is None:
            return 1
        out.write("%s %s\n" % addrs)
    elif cmd == "redis-preload":
        out.write(redis_preload(int(args[0]), int(args[1])))
    elif cmd == "mem-gib":
        out.write(mem_gib(read(args[0])))
    else:
        sys.exit(f"bench/stats.py: unknown subcommand {cmd!r}\n\n{__doc__}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
