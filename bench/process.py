# Python side of the Process benchmark: start+join of an empty target.
import multiprocessing as mp, sys, time

def empty():
    pass

if __name__ == "__main__":
    mp.set_start_method("fork")
    n = int(sys.argv[1])
    best = 1e9
    for _ in range(3):
        t0 = time.monotonic()
        for _ in range(n):
            p = mp.Process(target=empty)
            p.start()
            p.join()
        best = min(best, (time.monotonic() - t0) / n * 1e6)
    print("%.3f" % best)
