# Python side of the Queue benchmark: a child puts, the parent gets.
# "small N": integers, prints us/op; "big N": 1 MiB strings through a
# Queue(16), prints MiB/s; "bigu N": the same through an unbounded Queue;
# "table N": a 100-element list of mixed values,
# prints us/op.
import multiprocessing as mp, sys, time

MIB = 1024 * 1024

def mixed():
    out = []
    for i in range(100):
        k = i % 5
        out.append(i if k == 0 else i + 0.5 if k == 1 else "s%d" % i if k == 2
                   else (i % 2 == 0) if k == 3 else None if k == 4 else 0)
    return out

def produce(q, kind, n):
    item = "x" * MIB if kind in ("big", "bigu") else mixed() if kind == "table" else None
    for i in range(n):
        q.put(i if item is None else item)

def run(kind, n):
    q = mp.Queue(16 if kind == "big" else 0)
    t0 = time.monotonic()
    p = mp.Process(target=produce, args=(q, kind, n))
    p.start()
    for _ in range(n):
        q.get()
    t = time.monotonic() - t0
    p.join()
    return t

if __name__ == "__main__":
    mp.set_start_method("fork")
    kind, n = sys.argv[1], int(sys.argv[2])
    best = min(run(kind, n) for _ in range(3))
    print("%.3f" % (n / best if kind in ("big", "bigu") else best / n * 1e6))
