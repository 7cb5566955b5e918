/* The DPDK headers Sekisho binds: EAL, lcores, ethdev, mbuf, mempool, ring, flow;
 * and the IPsec-MB shim (AES-GCM). */
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_flow.h>
#include "shim.h"
#include "ipsecmb_shim.h"
