# Python side of the Pool benchmark: map of an identity function over n
# integers with Pool(2) (fork start), default chunksize; prints items/s.
import multiprocessing as mp, sys, time

def identity(x):
    return x

if __name__ == "__main__":
    mp.set_start_method("fork")
    n = int(sys.argv[1])
    data = list(range(n))
    with mp.Pool(2) as pool:
        pool.map(identity, range(10))
        best = 0
        for _ in range(3):
            t0 = time.monotonic()
            r = pool.map(identity, data)
            assert len(r) == n
            best = max(best, n / (time.monotonic() - t0))
    print("%.1f" % best)
