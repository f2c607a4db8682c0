# Python side of the Pool benchmark: apply_async+get of an identity
# function, one task at a time, with Pool(2) (fork start).
import multiprocessing as mp, sys, time

def identity(x):
    return x

if __name__ == "__main__":
    mp.set_start_method("fork")
    n = int(sys.argv[1])
    with mp.Pool(2) as pool:
        pool.apply(identity, (0,))
        best = 1e9
        for _ in range(3):
            t0 = time.monotonic()
            for i in range(n):
                pool.apply_async(identity, (i,)).get()
            best = min(best, (time.monotonic() - t0) / n * 1e6)
    print("%.3f" % best)
