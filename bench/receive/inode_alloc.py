# Measures the CPU cost of ext4 inode allocation on this machine (O_TMPFILE opens in a
# loop, 1 and 20 threads). Used to explain the receive benchmark; see docs/BENCHMARKS.md.
# Run: python3 bench/receive/inode_alloc.py (creates and removes ./allocbench under /work).
import os, time, threading, resource
O_TMPFILE = getattr(os, "O_TMPFILE", 0o20200000)
d="/work/allocbench"; os.makedirs(d, exist_ok=True)
def run(k, n=6000):
    fds=[]; lock=threading.Lock()
    def w():
        loc=[]
        for i in range(n//k):
            loc.append(os.open(d, O_TMPFILE|os.O_WRONLY, 0o600))
        with lock: fds.extend(loc)
    r0=resource.getrusage(resource.RUSAGE_SELF); t=time.time()
    ts=[threading.Thread(target=w) for _ in range(k)]; [x.start() for x in ts]; [x.join() for x in ts]
    el=time.time()-t; r1=resource.getrusage(resource.RUSAGE_SELF)
    print(f"threads={k:2} {n/el:8.0f}/s sys {1e6*(r1.ru_stime-r0.ru_stime)/n:6.1f}us/alloc")
    for f in fds: os.close(f)
for k in (1,20,1,20): run(k)
