/* LD_PRELOAD shim for the Janus benchmark (bench/sfu.py --mode janus).
 *
 * Janus (through libnice) skips interfaces flagged IFF_LOOPBACK when it gathers ICE host
 * candidates, even when `ice_enforce_list` names 127.0.0.1. This wraps getifaddrs() and
 * clears that flag, so Janus offers 127.0.0.1 like any other address and the benchmark's
 * traffic stays on loopback. Built at run time into a temporary directory:
 *
 *     cc -shared -fPIC -O2 -o janus_ifaddrs.so janus_ifaddrs.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stddef.h>

int getifaddrs(struct ifaddrs **ifap) {
    static int (*real_getifaddrs)(struct ifaddrs **) = NULL;
    if (real_getifaddrs == NULL)
        real_getifaddrs = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
    if (real_getifaddrs == NULL)
        return -1;
    int result = real_getifaddrs(ifap);
    if (result == 0)
        for (struct ifaddrs *ifa = *ifap; ifa != NULL; ifa = ifa->ifa_next)
            ifa->ifa_flags &= ~(unsigned int)IFF_LOOPBACK;
    return result;
}
