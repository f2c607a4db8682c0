# Python side of the futures benchmark: submit+result of an identity
# function, one task at a time, with ProcessPoolExecutor(2) (fork start).
import concurrent.futures as cf, multiprocessing as mp, sys, time

def identity(x):
    return x

if __name__ == "__main__":
    n = int(sys.argv[1])
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as ex:
        ex.submit(identity, 0).result()
        best = 1e9
        for _ in range(3):
            t0 = time.monotonic()
            for i in range(n):
                ex.submit(identity, i).result()
            best = min(best, (time.monotonic() - t0) / n * 1e6)
    print("%.3f" % best)
