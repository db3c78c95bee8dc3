"""Unit tests of bench/stats.py (run by scripts/test):

    python3 -m unittest discover -s bench -p 'test_*.py'
"""

import contextlib
import io
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stats  # noqa: E402


def run(*argv):
    """(exit status, stdout, stderr) of `stats.py ARGV...`, in process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = stats.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


class Files(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def file(self, name, text):
        path = os.path.join(self.dir.name, name)
        with open(path, "w") as f:
            f.write(text)
        return path


class Numbers(unittest.TestCase):
    def test_num_reads_like_awk(self):
        self.assertEqual(stats.num("52868.12"), 52868.12)
        self.assertEqual(stats.num(" 7"), 7.0)
        self.assertEqual(stats.num("1e3x"), 1000.0)
        self.assertEqual(stats.num(".5"), 0.5)
        self.assertEqual(stats.num("-2"), -2.0)
        self.assertEqual(stats.num("n/a"), 0.0)
        self.assertEqual(stats.num(""), 0.0)

    def test_median(self):
        self.assertEqual(run("median", 3, 1, 2), (0, "2.00\n", ""))
        self.assertEqual(run("median", "10", "2", "4", "3")[1], "3.50\n")
        self.assertEqual(run("median", "28845.3")[1], "28845.30\n")
        # numeric order, not string order
        self.assertEqual(run("median", "9", "10", "100")[1], "10.00\n")

    def test_range(self):
        self.assertEqual(run("range", 2, "1.140", "0.790", "1.000")[1], "0.79-1.14\n")
        self.assertEqual(run("range", 0, "62720.4", "22367.2", "52868.9")[1], "22367-62720\n")

    def test_ratio(self):
        self.assertEqual(run("ratio", "28845", "28338")[1], "1.018\n")
        self.assertEqual(run("ratio", "1", "3")[1], "0.333\n")

    def test_comparisons(self):
        self.assertEqual(run("at-least", "0.80", "0.80")[0], 0)
        self.assertEqual(run("at-least", "0.79", "0.80")[0], 1)
        self.assertEqual(run("at-most", "1.000", "1.0")[0], 0)
        self.assertEqual(run("at-most", "2.546", "1.0")[0], 1)
        self.assertEqual(run("at-most", "0.005", "1.0")[0], 0)

    def test_half_rate(self):
        self.assertEqual(run("half-rate", "52868.00", 4)[1], "6608\n")
        self.assertEqual(run("half-rate", "7.00", 4)[1], "1\n")
        self.assertEqual(run("half-rate", "0.00", 4)[1], "1\n")

    def test_foreign_pct(self):
        # 150 ticks busy, 100 ours, over 1 s of 2 CPUs at 100 Hz: 25 %
        self.assertEqual(run("foreign-pct", 1150, 1100, "10.0", "11.0", 100, 2)[1], "25\n")
        # ours above busy (tick rounding): 0, never negative
        self.assertEqual(run("foreign-pct", 100, 120, "10.0", "11.0", 100, 2)[1], "0\n")
        # rounds half to even like printf
        self.assertEqual(stats.foreign_pct(1, 0, 0, 1, 100, 2), "0")
        self.assertEqual(stats.foreign_pct(3, 0, 0, 1, 100, 2), "2")


class Percentiles(Files):
    def log(self, name, rows):
        return self.file(name, "".join(f"{1700000000000000 + i}\t{s}\t{d}\n" for i, (s, d) in enumerate(rows)))

    def test_nearest_rank(self):
        # 1..100 ms: p50 is the 50th value, p99 the 99th
        a = self.log("a.tsv", [(200, (i + 1) * 1000) for i in range(0, 100, 2)])
        b = self.log("b.tsv", [(200, (i + 1) * 1000) for i in range(1, 100, 2)])
        self.assertEqual(run("percentiles", 64, a, b), (0, "50.000 99.000\n", ""))

    def test_small_and_rounding(self):
        a = self.log("a.tsv", [(200, 1234), (200, 5), (200, 99999)])
        # n = 3: rank ceil(1.5) = 2 and ceil(2.97) = 3
        self.assertEqual(run("percentiles", 64, a)[1], "1.234 99.999\n")

    def test_warm_up_boundary(self):
        # up to INFLIGHT requests per log with status 0 are fine, and counted
        a = self.log("a.tsv", [(0, 10), (0, 20), (200, 30)])
        b = self.log("b.tsv", [(0, 40), (200, 50)])
        self.assertEqual(run("percentiles", 2, a, b)[1], "0.030 0.050\n")
        rc, out, err = run("percentiles", 1, a, b)
        self.assertEqual((rc, out), (1, ""))
        self.assertEqual(err, f"{a} {b}: requests with a status other than 200\n")

    def test_failed_status(self):
        a = self.log("a.tsv", [(200, 10), (503, 20)])
        self.assertEqual(run("percentiles", 64, a)[2], f"{a}: requests with a status other than 200\n")

    def test_empty(self):
        a = self.file("a.tsv", "")
        self.assertEqual(run("percentiles", 64, a), (1, "", f"{a}: empty log\n"))


def histogram(counts, extra=""):
    """A /metrics text with cumulative verify-duration buckets."""
    bounds = ["0.000005", "0.00001", "0.001", "0.005", "1", "+Inf"]
    lines = ["# HELP revokd_verify_duration_seconds Time", "# TYPE revokd_verify_duration_seconds histogram"]
    for le, c in zip(bounds, counts):
        lines.append(f'revokd_verify_duration_seconds_bucket{{le="{le}"}} {c}')
    lines.append(f"revokd_verify_duration_seconds_count {counts[-1]}")
    return "\n".join(lines) + "\n" + extra


class ServerP99(Files):
    def p99(self, before, after):
        return run("server-p99", self.file("before.prom", before), self.file("after.prom", after))[1]

    def test_bucket_upper_bound(self):
        before = histogram([0, 0, 100, 100, 100, 100])
        after = histogram([0, 0, 100, 1095, 1100, 1100])  # 1000 new: 995 under 5 ms
        self.assertEqual(self.p99(before, after), "<= 5.000\n")
        after = histogram([0, 0, 100, 1089, 1100, 1100])  # 989 < 990: next bucket
        self.assertEqual(self.p99(before, after), "<= 1000.000\n")

    def test_beyond_last_bound(self):
        before = histogram([0, 0, 0, 0, 0, 0])
        after = histogram([0, 0, 0, 0, 90, 100])
        self.assertEqual(self.p99(before, after), "> 1000.000\n")

    def test_sub_millisecond(self):
        after = histogram([995, 1000, 1000, 1000, 1000, 1000])
        self.assertEqual(self.p99("", after), "<= 0.005\n")

    def test_nothing_new(self):
        same = histogram([1, 2, 3, 4, 5, 6])
        self.assertEqual(self.p99(same, same), "n/a\n")
        self.assertEqual(self.p99("", "revokd_verify_total 3\n"), "n/a\n")


class MetricSum(Files):
    PROM = (
        "# HELP revokd_verify_total VerifyToken calls by verdict.\n"
        "# TYPE revokd_verify_total counter\n"
        'revokd_verify_total{verdict="valid"} 1200\n'
        'revokd_verify_total{verdict="revoked"} 3\n'
        "revokd_verify_total_other 1000\n"
        'revokd_grpc_requests_total{method="VerifyToken",code="OK"} 1190\n'
        'revokd_grpc_requests_total{code="OK",method="IssueToken"} 2\n'
        'revokd_grpc_requests_total{method="VerifyToken",code="Internal"} 10\n'
        "revokd_token_cache_hits_total 7.9\n"
    )

    def sum(self, *args):
        return run("metric-sum", self.file("m.prom", self.PROM), *args)[1]

    def test_sums(self):
        self.assertEqual(self.sum("revokd_verify_total"), "1203\n")
        self.assertEqual(self.sum("revokd_verify_total", 'verdict="valid"'), "1200\n")
        self.assertEqual(self.sum("revokd_grpc_requests_total", 'method="VerifyToken"'), "1200\n")
        ok = 'method="VerifyToken".*code="OK"|code="OK".*method="VerifyToken"'
        self.assertEqual(self.sum("revokd_grpc_requests_total", ok), "1190\n")
        self.assertEqual(self.sum("revokd_token_cache_hits_total"), "7\n")
        self.assertEqual(self.sum("revokd_missing_total"), "0\n")


class Misc(Files):
    def test_child_ticks(self):
        times = self.file("times", "0m0.010s 0m0.005s\n1m2.500s 0m0.255s\n")
        # (62.5 + 0.255) s at 100 Hz = 6275.5 ticks, truncated
        self.assertEqual(run("child-ticks", 100, times)[1], "6275\n")

    def test_serving_addrs(self):
        log = self.file("revokd.log", (
            '{"timestamp":"t","level":"INFO","message":"keys loaded","target":"revokd::server"}\n'
            '{"timestamp":"t","level":"INFO","message":"revokd serving","grpc_addr":"127.0.0.1:43953",'
            '"admin_addr":"127.0.0.1:39177","store":"redis+mirror","target":"revokd::server"}\n'
            '{"timestamp":"t","level":"INFO","message":"revocation mirror'
        ))
        self.assertEqual(run("serving-addrs", log), (0, "127.0.0.1:43953 127.0.0.1:39177\n", ""))
        self.assertEqual(run("serving-addrs", self.file("early.log", '{"message":"keys loaded"}\n{"mess'))[0], 1)
        self.assertEqual(run("serving-addrs", os.path.join(self.dir.name, "none.log"))[0], 1)

    def test_redis_preload(self):
        self.assertEqual(run("redis-preload", 2, 1800000000)[1],
                         "SET revokd:jti:bench-revoked-0000000 1 EXAT 1800000000\r\n"
                         "SET revokd:jti:bench-revoked-0000001 1 EXAT 1800000000\r\n")

    def test_mem_gib(self):
        meminfo = self.file("meminfo", "MemTotal:       24608132 kB\nMemFree:        1000 kB\n")
        self.assertEqual(run("mem-gib", meminfo)[1], "23 GiB")


if __name__ == "__main__":
    unittest.main()
