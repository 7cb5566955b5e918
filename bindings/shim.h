/* Exported wrappers for DPDK's static-inline fast-path functions and macros,
 * which bindgen cannot bind because they have no symbol in the libraries. */
#ifndef SEKISHO_SHIM_H
#define SEKISHO_SHIM_H
#include <stdint.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

uint16_t shim_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t shim_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *shim_pktmbuf_alloc(struct rte_mempool *pool);
int shim_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned n);
void shim_pktmbuf_free(struct rte_mbuf *m);
void *shim_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t shim_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t shim_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t shim_pktmbuf_nb_segs(const struct rte_mbuf *m);
uint16_t shim_pktmbuf_tailroom(const struct rte_mbuf *m);
/* Sets a single-segment mbuf's length; returns -1 if it does not fit. */
int shim_pktmbuf_set_len(struct rte_mbuf *m, uint16_t len);
/* Grows the packet at the front into the headroom; -1 if there is too little. */
int shim_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
/* Removes len bytes from the front; -1 if the first segment is shorter. */
int shim_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
uint32_t shim_pktmbuf_rss_hash(const struct rte_mbuf *m);
unsigned shim_lcore_id(void);
int shim_errno(void);
uint64_t shim_tsc_cycles(void);
void shim_pause(void);
/* RSS hash fields Sekisho asks for: IPv4/IPv6 addresses and TCP/UDP ports. */
uint64_t shim_rss_hf_ip_tcp_udp(void);
#endif
