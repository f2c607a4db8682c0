# Python side of the scale benchmark (bench/scale_bench.lua), items/s, best of 3:
#   "pool W N":  Pool(W).map of an identity function over N integers
#   "queue P N": P producers put N/P integers each into one Queue, P consumers
#                get as many each; from the first start to the last join
import multiprocessing as mp, sys, time

def identity(x):
    return x

def produce(q, per):
    for k in range(per):
        q.put(k)

def consume(q, per):
    for _ in range(per):
        q.get()

def pool_rate(w, n):
    data = list(range(n))
    with mp.Pool(w) as pool:
        pool.map(identity, range(10))
        best = 0
        for _ in range(3):
            t0 = time.monotonic()
            assert len(pool.map(identity, data)) == n
            best = max(best, n / (time.monotonic() - t0))
    return best

def queue_rate(p, n):
    best, per = 0, n // p
    for _ in range(3):
        q = mp.Queue()
        t0 = time.monotonic()
        procs = []
        for _ in range(p):
            procs.append(mp.Process(target=produce, args=(q, per)))
            procs.append(mp.Process(target=consume, args=(q, per)))
        for pr in procs:
            pr.start()
        for pr in procs:
            pr.join()
        best = max(best, per * p / (time.monotonic() - t0))
    return best

if __name__ == "__main__":
    mp.set_start_method("fork")
    kind, k, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print("%.1f" % (pool_rate(k, n) if kind == "pool" else queue_rate(k, n)))
