#ifndef SHROUD_COPENSSL_SHIM_H
#define SHROUD_COPENSSL_SHIM_H
#include <openssl/evp.h>
#include <openssl/err.h>
#include <openssl/crypto.h>

// EVP_CIPHER_CTX_ctrl takes the GCM tag through a void*; typed wrappers keep Swift call sites plain.
static inline int shroud_evp_gcm_set_ivlen(EVP_CIPHER_CTX *c, int len) { return EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, len, NULL); }
static inline int shroud_evp_gcm_get_tag(EVP_CIPHER_CTX *c, int len, unsigned char *tag) { return EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, len, tag); }
static inline int shroud_evp_gcm_set_tag(EVP_CIPHER_CTX *c, int len, unsigned char *tag) { return EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, len, tag); }

// GCM tag through OSSL_PARAM directly: skips EVP_CIPHER_CTX_ctrl's translation layer on the
// per-frame path of SFrame (OpenSSL 3 routes ctrl calls through params anyway).
#include <openssl/core_names.h>
#include <openssl/params.h>
static inline int shroud_evp_aead_get_tag(EVP_CIPHER_CTX *c, unsigned char *tag, size_t len) {
    OSSL_PARAM p[2] = { OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, len), OSSL_PARAM_construct_end() };
    return EVP_CIPHER_CTX_get_params(c, p);
}
static inline int shroud_evp_aead_set_tag(EVP_CIPHER_CTX *c, unsigned char *tag, size_t len) {
    OSSL_PARAM p[2] = { OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, len), OSSL_PARAM_construct_end() };
    return EVP_CIPHER_CTX_set_params(c, p);
}
#endif
