/*
 * libsrtp's cost per packet for the six suites srtp-relay speaks, measured the way
 * bench/benches/srtp.rs measures ours: protect copies a template into the work buffer and
 * protects it in place; unprotect copies each packet of a ring of 4,096 (crossing a sequence
 * wrap) and unprotects it, with a fresh session (window 64) per pass, set-up not timed.
 *
 * Built and run by bench/libsrtp/run. Prints one line per suite, size and operation:
 *   <suite> <bytes> <protect|unprotect|protect+unprotect> <median ns per packet>
 */
#define _POSIX_C_SOURCE 199309L
#include <srtp2/srtp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RING 4096
#define FIRST_SEQ 63000
#define ROUNDS 9
#define MAX_LEN 1400

typedef void (*setter)(srtp_crypto_policy_t *);

struct suite {
    const char *name;
    setter rtp, rtcp;
    int key_len;
};

/* libsrtp spells the default suite as a macro: wrap it so it has an address. */
static void cm128_80(srtp_crypto_policy_t *p) { srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(p); }

static const struct suite suites[] = {
    {"80", cm128_80, cm128_80, 30},
    {"32", srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32, cm128_80, 30},
    {"256_80", srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80,
     srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80, 46},
    {"256_32", srtp_crypto_policy_set_aes_cm_256_hmac_sha1_32,
     srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80, 46},
    {"gcm128", srtp_crypto_policy_set_aes_gcm_128_16_auth,
     srtp_crypto_policy_set_aes_gcm_128_16_auth, 28},
    {"gcm256", srtp_crypto_policy_set_aes_gcm_256_16_auth,
     srtp_crypto_policy_set_aes_gcm_256_16_auth, 44},
};

static uint8_t key[46];

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static srtp_t session(const struct suite *s, int outbound) {
    srtp_policy_t p;
    memset(&p, 0, sizeof p);
    s->rtp(&p.rtp);
    s->rtcp(&p.rtcp);
    p.ssrc.type = outbound ? ssrc_any_outbound : ssrc_any_inbound;
    p.key = key;
    p.window_size = 64;
    p.allow_repeat_tx = 0;
    srtp_t out;
    if (srtp_create(&out, &p) != srtp_err_status_ok) {
        fprintf(stderr, "srtp_create failed for %s\n", s->name);
        exit(1);
    }
    return out;
}

static void packet(uint8_t *p, int len, uint16_t seq) {
    memset(p, 0xa5, len);
    const uint8_t hdr[12] = {0x80, 0, 0, 0, 0, 0, 0x03, 0x20, 0xde, 0xca, 0xfb, 0xad};
    memcpy(p, hdr, 12);
    p[2] = seq >> 8;
    p[3] = seq & 0xff;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v) {
    qsort(v, ROUNDS, sizeof *v, cmp);
    return v[ROUNDS / 2];
}

int main(void) {
    srtp_init();
    for (int i = 0; i < 46; i++) key[i] = (uint8_t)(i * 37 + 11);
    static uint8_t ring[RING][MAX_LEN];
    static int ring_len[RING];
    const int sizes[2] = {172, 1200};
    for (size_t s = 0; s < sizeof suites / sizeof *suites; s++) {
        const struct suite *su = &suites[s];
        for (int z = 0; z < 2; z++) {
            int len = sizes[z];
            uint8_t buf[MAX_LEN], tmpl[MAX_LEN];
            packet(tmpl, len, 0);
            double r[ROUNDS];

            /* protect: 200,000 packets per round, sequence numbers counting up */
            for (int k = 0; k < ROUNDS; k++) {
                srtp_t tx = session(su, 1);
                uint16_t seq = 0;
                const int n = 200000;
                double t0 = now_ns();
                for (int i = 0; i < n; i++) {
                    memcpy(buf, tmpl, len);
                    seq++;
                    buf[2] = seq >> 8;
                    buf[3] = seq & 0xff;
                    int l = len;
                    if (srtp_protect(tx, buf, &l) != srtp_err_status_ok) exit(2);
                }
                r[k] = (now_ns() - t0) / n;
                srtp_dealloc(tx);
            }
            printf("%s %d protect %.1f\n", su->name, len, median(r));

            /* the ring, crossing a wrap */
            srtp_t tx = session(su, 1);
            for (int i = 0; i < RING; i++) {
                packet(ring[i], len, (uint16_t)(FIRST_SEQ + i));
                ring_len[i] = len;
                if (srtp_protect(tx, ring[i], &ring_len[i]) != srtp_err_status_ok) exit(3);
            }
            srtp_dealloc(tx);
            for (int k = 0; k < ROUNDS; k++) {
                double spent = 0;
                const int passes = 50;
                for (int pass = 0; pass < passes; pass++) {
                    srtp_t rx = session(su, 0);
                    double t0 = now_ns();
                    for (int i = 0; i < RING; i++) {
                        memcpy(buf, ring[i], ring_len[i]);
                        int l = ring_len[i];
                        if (srtp_unprotect(rx, buf, &l) != srtp_err_status_ok) exit(4);
                    }
                    spent += now_ns() - t0;
                    srtp_dealloc(rx);
                }
                r[k] = spent / (passes * RING);
            }
            printf("%s %d unprotect %.1f\n", su->name, len, median(r));

            /* protect then unprotect, as on a re-keyed leg */
            for (int k = 0; k < ROUNDS; k++) {
                srtp_t tx2 = session(su, 1), rx = session(su, 0);
                uint16_t seq = 0;
                const int n = 100000;
                double t0 = now_ns();
                for (int i = 0; i < n; i++) {
                    memcpy(buf, tmpl, len);
                    seq++;
                    buf[2] = seq >> 8;
                    buf[3] = seq & 0xff;
                    int l = len;
                    if (srtp_protect(tx2, buf, &l) != srtp_err_status_ok) exit(5);
                    if (srtp_unprotect(rx, buf, &l) != srtp_err_status_ok) exit(6);
                }
                r[k] = (now_ns() - t0) / n;
                srtp_dealloc(tx2);
                srtp_dealloc(rx);
            }
            printf("%s %d protect+unprotect %.1f\n", su->name, len, median(r));
            fflush(stdout);
        }
    }
    return 0;
}
