/* See shim.h: every function here is a one-line forward to a static inline. */
#include <rte_errno.h>
#include <rte_lcore.h>
#include "shim.h"

uint16_t shim_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_rx_burst(port, queue, pkts, n); }

uint16_t shim_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_tx_burst(port, queue, pkts, n); }

struct rte_mbuf *shim_pktmbuf_alloc(struct rte_mempool *pool)
{ return rte_pktmbuf_alloc(pool); }

void shim_pktmbuf_free(struct rte_mbuf *m)
{ rte_pktmbuf_free(m); }

unsigned shim_lcore_id(void)
{ return rte_lcore_id(); }

int shim_errno(void)
{ return rte_errno; }

uint64_t shim_rss_hf_ip_tcp_udp(void)
{ return RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP; }
