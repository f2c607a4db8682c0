# Python side of the communicate bench: MIB mebibytes through cat, in MiB/s.
import subprocess, sys, time

mib = int(sys.argv[1])
data = b"0123456789abcdef" * (mib << 16)
best = 0
for _ in range(3):
    t0 = time.monotonic()
    p = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = p.communicate(data)
    best = max(best, mib / (time.monotonic() - t0))
    assert out == data
print("%.1f" % best)
