# Python side of the futures benchmark: submit n futures of an identity
# function, then collect them with as_completed, with
# ProcessPoolExecutor(2) (fork start); microseconds per future.
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
            fs = [ex.submit(identity, i) for i in range(n)]
            total = 0
            for f in cf.as_completed(fs):
                total += f.result()
            assert total == n * (n - 1) // 2
            best = min(best, (time.monotonic() - t0) / n * 1e6)
    print("%.3f" % best)
