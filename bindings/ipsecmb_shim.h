/* AES-GCM through Intel IPsec-MB; see ipsecmb_shim.c. */
#ifndef SEKISHO_IPSECMB_SHIM_H
#define SEKISHO_IPSECMB_SHIM_H
#include <stdint.h>

/* Room the caller reserves (64-byte aligned) for one expanded key. */
#define SHIM_IMB_GCM_KEY_BYTES 1024

/* Picks the implementation for this CPU, once; 0 on success. */
int shim_imb_init(void);
/* The instruction set the library chose: "sse", "avx", "avx2", "avx512". */
const char *shim_imb_arch(void);
/* Expands a 16- or 32-byte key into key_data; 0 on success. */
int shim_imb_gcm_precompute(uint32_t key_len, const uint8_t *key, void *key_data);
/* Encrypts data in place with a 12-byte IV and writes the 16-byte tag. */
void shim_imb_gcm_seal(uint32_t key_len, const void *key_data, const uint8_t *iv,
		       const uint8_t *aad, uint64_t aad_len, uint8_t *data, uint64_t len,
		       uint8_t *tag);
/* Decrypts data in place and writes the tag it computed (the caller compares). */
void shim_imb_gcm_open(uint32_t key_len, const void *key_data, const uint8_t *iv,
		       const uint8_t *aad, uint64_t aad_len, uint8_t *data, uint64_t len,
		       uint8_t *computed_tag);
#endif
