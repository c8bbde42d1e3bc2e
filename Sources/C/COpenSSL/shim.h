#ifndef SHROUD_COPENSSL_SHIM_H
#define SHROUD_COPENSSL_SHIM_H
#include <openssl/evp.h>
#include <openssl/err.h>
#include <openssl/crypto.h>

// EVP_CIPHER_CTX_ctrl takes the GCM tag through a void*; typed wrappers keep Swift call sites plain.
static inline int shroud_evp_gcm_set_ivlen(EVP_CIPHER_CTX *c, int len) { return EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, len, NULL); }
static inline int shroud_evp_gcm_get_tag(EVP_CIPHER_CTX *c, int len, unsigned char *tag) { return EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, len, tag); }
static inline int shroud_evp_gcm_set_tag(EVP_CIPHER_CTX *c, int len, unsigned char *tag) { return EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, len, tag); }
#endif
