# Python side of the Pool benchmark: imap of an identity function over a
# generator of n integers with Pool(2) (fork start), chunksize 1000;
# prints the peak RSS of the parent in MiB.
import multiprocessing as mp, resource, sys

def identity(x):
    return x

if __name__ == "__main__":
    mp.set_start_method("fork")
    n = int(sys.argv[1])
    with mp.Pool(2) as pool:
        total = 0
        for v in pool.imap(identity, (i for i in range(n)), 1000):
            total += 1
        assert total == n
    print("%.1f" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
