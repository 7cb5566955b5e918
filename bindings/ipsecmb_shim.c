/* AES-GCM through Intel's IPsec-MB library (the engine of DPDK's
 * crypto_aesni_gcm driver), called directly: one manager for the process,
 * chosen for this CPU once, and the library's direct GCM API, which reads
 * the manager's function table and keeps no state in it. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <intel-ipsec-mb.h>
#include "ipsecmb_shim.h"

_Static_assert(sizeof(struct gcm_key_data) <= SHIM_IMB_GCM_KEY_BYTES, "gcm_key_data grew");

static IMB_MGR *manager;
static pthread_once_t manager_once = PTHREAD_ONCE_INIT;

static void manager_init(void)
{
	IMB_MGR *m = alloc_mb_mgr(0);
	if (m == NULL)
		return;
	init_mb_mgr_auto(m, NULL);
	if (imb_get_errno(m) != 0) {
		free_mb_mgr(m);
		return;
	}
	manager = m;
}

int shim_imb_init(void)
{
	pthread_once(&manager_once, manager_init);
	return manager == NULL ? -1 : 0;
}

const char *shim_imb_arch(void)
{
	if (manager == NULL)
		return "none";
	switch (manager->used_arch) {
	case IMB_ARCH_SSE: return "sse";
	case IMB_ARCH_AVX: return "avx";
	case IMB_ARCH_AVX2: return "avx2";
	case IMB_ARCH_AVX512: return "avx512";
	default: return "other";
	}
}

int shim_imb_gcm_precompute(uint32_t key_len, const uint8_t *key, void *key_data)
{
	if (manager == NULL)
		return -1;
	if (key_len == 16)
		IMB_AES128_GCM_PRE(manager, key, (struct gcm_key_data *)key_data);
	else if (key_len == 32)
		IMB_AES256_GCM_PRE(manager, key, (struct gcm_key_data *)key_data);
	else
		return -1;
	return 0;
}

void shim_imb_gcm_seal(uint32_t key_len, const void *key_data, const uint8_t *iv,
		       const uint8_t *aad, uint64_t aad_len, uint8_t *data, uint64_t len,
		       uint8_t *tag)
{
	struct gcm_context_data ctx;
	const struct gcm_key_data *k = key_data;
	if (key_len == 16)
		IMB_AES128_GCM_ENC(manager, k, &ctx, data, data, len, iv, aad, aad_len, tag, 16);
	else
		IMB_AES256_GCM_ENC(manager, k, &ctx, data, data, len, iv, aad, aad_len, tag, 16);
}

void shim_imb_gcm_open(uint32_t key_len, const void *key_data, const uint8_t *iv,
		       const uint8_t *aad, uint64_t aad_len, uint8_t *data, uint64_t len,
		       uint8_t *computed_tag)
{
	struct gcm_context_data ctx;
	const struct gcm_key_data *k = key_data;
	if (key_len == 16)
		IMB_AES128_GCM_DEC(manager, k, &ctx, data, data, len, iv, aad, aad_len, computed_tag, 16);
	else
		IMB_AES256_GCM_DEC(manager, k, &ctx, data, data, len, iv, aad, aad_len, computed_tag, 16);
}
