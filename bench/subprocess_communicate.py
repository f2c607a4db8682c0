# Python side of the communicate bench: MIB mebibytes through cat, in MiB/s
# (best of three; with "once", one run: the first of this process).
import subprocess, sys, time

mib = int(sys.argv[1])
data = b"0123456789abcdef" * (mib << 16)
best = 0
for _ in range(1 if sys.argv[2:] == ["once"] else 3):
    t0 = time.monotonic()
    p = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = p.communicate(data)
    best = max(best, mib / (time.monotonic() - t0))
    assert out == data
print("%.1f" % best)
