# Python side of the spawn bench: subprocess.call(["true"]), optionally
# with a heap of HEAP_MIB mebibytes held by the parent.
import subprocess, sys, time

n = int(sys.argv[1])
heap_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 0
heap = [bytes([i % 256]) * (1 << 20) for i in range(heap_mib)]
best = 1e9
for _ in range(3):
    t0 = time.monotonic()
    for _ in range(n):
        subprocess.call(["true"])
    best = min(best, (time.monotonic() - t0) / n * 1e6)
print("%.3f" % best)
