/* Exported wrappers for DPDK's static-inline fast-path functions and macros,
 * which bindgen cannot bind because they have no symbol in the libraries.
 * (Plain mbuf field accesses, such as mtod and the lengths, are done in Rust
 * on the bindgen struct, where they inline.) */
#ifndef SEKISHO_SHIM_H
#define SEKISHO_SHIM_H
#include <stdint.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

uint16_t shim_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t shim_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *shim_pktmbuf_alloc(struct rte_mempool *pool);
void shim_pktmbuf_free(struct rte_mbuf *m);
unsigned shim_lcore_id(void);
int shim_errno(void);
/* RSS hash fields Sekisho asks for: IPv4/IPv6 addresses and TCP/UDP ports. */
uint64_t shim_rss_hf_ip_tcp_udp(void);
#endif
