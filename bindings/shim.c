/* See shim.h: every function here is a one-line forward to a static inline. */
#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_pause.h>
#include "shim.h"

uint16_t shim_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_rx_burst(port, queue, pkts, n); }

uint16_t shim_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_tx_burst(port, queue, pkts, n); }

struct rte_mbuf *shim_pktmbuf_alloc(struct rte_mempool *pool)
{ return rte_pktmbuf_alloc(pool); }

int shim_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned n)
{ return rte_pktmbuf_alloc_bulk(pool, mbufs, n); }

void shim_pktmbuf_free(struct rte_mbuf *m)
{ rte_pktmbuf_free(m); }

void *shim_pktmbuf_mtod(struct rte_mbuf *m)
{ return rte_pktmbuf_mtod(m, void *); }

uint16_t shim_pktmbuf_data_len(const struct rte_mbuf *m)
{ return m->data_len; }

uint32_t shim_pktmbuf_pkt_len(const struct rte_mbuf *m)
{ return m->pkt_len; }

uint16_t shim_pktmbuf_nb_segs(const struct rte_mbuf *m)
{ return m->nb_segs; }

uint16_t shim_pktmbuf_tailroom(const struct rte_mbuf *m)
{ return rte_pktmbuf_tailroom(m); }

int shim_pktmbuf_set_len(struct rte_mbuf *m, uint16_t len)
{
	if (m->nb_segs != 1 || (uint32_t)m->data_off + len > m->buf_len)
		return -1;
	m->data_len = len;
	m->pkt_len = len;
	return 0;
}

uint32_t shim_pktmbuf_rss_hash(const struct rte_mbuf *m)
{ return (m->ol_flags & RTE_MBUF_F_RX_RSS_HASH) ? m->hash.rss : 0; }

unsigned shim_lcore_id(void)
{ return rte_lcore_id(); }

int shim_errno(void)
{ return rte_errno; }

uint64_t shim_tsc_cycles(void)
{ return rte_get_tsc_cycles(); }

void shim_pause(void)
{ rte_pause(); }

uint64_t shim_rss_hf_ip_tcp_udp(void)
{ return RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP; }

int shim_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_prepend(m, len) == NULL ? -1 : 0;
}

int shim_pktmbuf_adj(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_adj(m, len) == NULL ? -1 : 0;
}
