// recvmmsg, sendmmsg and struct mmsghdr are GNU extensions.
#define _GNU_SOURCE
#include "CShroudIO.h"
#include <malloc.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void to_sockaddr(const shroud_addr *in, struct sockaddr_storage *out, socklen_t *length) {
    memset(out, 0, sizeof(*out));
    if (in->family == 4) {
        struct sockaddr_in *v4 = (struct sockaddr_in *)out;
        v4->sin_family = AF_INET;
        v4->sin_port = htons(in->port);
        v4->sin_addr.s_addr = htonl((uint32_t)in->low);
        *length = sizeof(*v4);
    } else {
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(in->port);
        for (int i = 0; i < 8; i++) {
            v6->sin6_addr.s6_addr[i] = (uint8_t)(in->high >> (56 - 8 * i));
            v6->sin6_addr.s6_addr[8 + i] = (uint8_t)(in->low >> (56 - 8 * i));
        }
        *length = sizeof(*v6);
    }
}

static void from_sockaddr(const struct sockaddr_storage *in, shroud_addr *out) {
    memset(out, 0, sizeof(*out));
    if (in->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)in;
        out->family = 4;
        out->port = ntohs(v4->sin_port);
        out->low = ntohl(v4->sin_addr.s_addr);
    } else if (in->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)in;
        out->family = 6;
        out->port = ntohs(v6->sin6_port);
        for (int i = 0; i < 8; i++) {
            out->high = out->high << 8 | v6->sin6_addr.s6_addr[i];
            out->low = out->low << 8 | v6->sin6_addr.s6_addr[8 + i];
        }
    }
}

int shroud_udp_open(const char *host, uint16_t port, uint16_t *bound_port, int buffer_bytes) {
    struct sockaddr_storage address;
    socklen_t length;
    memset(&address, 0, sizeof(address));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&address;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&address;
    int family;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        family = AF_INET;
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        length = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        family = AF_INET6;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        length = sizeof(*v6);
    } else {
        return -EINVAL;
    }
    int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (buffer_bytes > 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer_bytes, sizeof(buffer_bytes));
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer_bytes, sizeof(buffer_bytes));
    }
    if (bind(fd, (struct sockaddr *)&address, length) != 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    struct sockaddr_storage bound;
    socklen_t bound_length = sizeof(bound);
    if (getsockname(fd, (struct sockaddr *)&bound, &bound_length) == 0 && bound_port) {
        shroud_addr converted;
        from_sockaddr(&bound, &converted);
        *bound_port = converted.port;
    }
    return fd;
}

void shroud_udp_close(int fd) { close(fd); }

long shroud_udp_sendto(int fd, const void *data, size_t length, const shroud_addr *to) {
    struct sockaddr_storage address;
    socklen_t address_length;
    to_sockaddr(to, &address, &address_length);
    ssize_t sent = sendto(fd, data, length, 0, (struct sockaddr *)&address, address_length);
    return sent < 0 ? -errno : (long)sent;
}

static int wait_readable(int fd, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ready = poll(&p, 1, timeout_ms);
    if (ready < 0) return errno == EINTR ? 0 : -errno;
    return ready;
}

long shroud_udp_recvfrom(int fd, void *buffer, size_t capacity, shroud_addr *from, int timeout_ms) {
    int ready = wait_readable(fd, timeout_ms);
    if (ready <= 0) return ready;
    struct sockaddr_storage address;
    socklen_t length = sizeof(address);
    ssize_t received = recvfrom(fd, buffer, capacity, MSG_TRUNC | MSG_DONTWAIT, (struct sockaddr *)&address, &length);
    if (received < 0) return errno == EAGAIN ? 0 : -errno;
    from_sockaddr(&address, from);
    return (long)received;
}

struct shroud_recv_batch {
    int capacity;
    int slot_bytes;
    uint8_t *data;
    struct mmsghdr *messages;
    struct iovec *vectors;
    struct sockaddr_storage *sources;
};

shroud_recv_batch *shroud_recv_batch_create(int capacity, int slot_bytes) {
    shroud_recv_batch *batch = calloc(1, sizeof(*batch));
    if (!batch) return NULL;
    batch->capacity = capacity;
    batch->slot_bytes = slot_bytes;
    batch->data = calloc((size_t)capacity, (size_t)slot_bytes);
    batch->messages = calloc((size_t)capacity, sizeof(struct mmsghdr));
    batch->vectors = calloc((size_t)capacity, sizeof(struct iovec));
    batch->sources = calloc((size_t)capacity, sizeof(struct sockaddr_storage));
    if (!batch->data || !batch->messages || !batch->vectors || !batch->sources) {
        shroud_recv_batch_destroy(batch);
        return NULL;
    }
    return batch;
}

void shroud_recv_batch_destroy(shroud_recv_batch *batch) {
    if (!batch) return;
    free(batch->data);
    free(batch->messages);
    free(batch->vectors);
    free(batch->sources);
    free(batch);
}

int shroud_recv_batch_receive(int fd, shroud_recv_batch *batch, int timeout_ms) {
    int ready = wait_readable(fd, timeout_ms);
    if (ready <= 0) return ready;
    for (int i = 0; i < batch->capacity; i++) {
        batch->vectors[i].iov_base = batch->data + (size_t)i * (size_t)batch->slot_bytes;
        batch->vectors[i].iov_len = (size_t)batch->slot_bytes;
        struct msghdr *header = &batch->messages[i].msg_hdr;
        memset(header, 0, sizeof(*header));
        header->msg_iov = &batch->vectors[i];
        header->msg_iovlen = 1;
        header->msg_name = &batch->sources[i];
        header->msg_namelen = sizeof(struct sockaddr_storage);
    }
    int received = recvmmsg(fd, batch->messages, (unsigned)batch->capacity, MSG_DONTWAIT, NULL);
    if (received < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -errno;
    return received;
}

const uint8_t *shroud_recv_batch_data(const shroud_recv_batch *batch, int index) {
    return batch->data + (size_t)index * (size_t)batch->slot_bytes;
}

long shroud_recv_batch_length(const shroud_recv_batch *batch, int index) {
    // With MSG_TRUNC in msg_flags, msg_len is the cut length; a cut datagram is reported one
    // byte longer than the slot, so the caller sees it as oversized.
    const struct mmsghdr *message = &batch->messages[index];
    if (message->msg_hdr.msg_flags & MSG_TRUNC) return (long)batch->slot_bytes + 1;
    return (long)message->msg_len;
}

void shroud_recv_batch_source(const shroud_recv_batch *batch, int index, shroud_addr *from) {
    from_sockaddr(&batch->sources[index], from);
}

struct shroud_send_queue {
    int capacity;
    int count;
    int copy_slots;
    int copies_used;
    int slot_bytes;
    uint8_t *copies;
    struct mmsghdr *messages;
    struct iovec *vectors;
    struct sockaddr_storage *destinations;
    uint64_t sent;
    uint64_t failed;
};

shroud_send_queue *shroud_send_queue_create(int capacity, int copy_slots, int slot_bytes) {
    shroud_send_queue *queue = calloc(1, sizeof(*queue));
    if (!queue) return NULL;
    queue->capacity = capacity;
    queue->copy_slots = copy_slots;
    queue->slot_bytes = slot_bytes;
    queue->copies = calloc((size_t)copy_slots, (size_t)slot_bytes);
    queue->messages = calloc((size_t)capacity, sizeof(struct mmsghdr));
    queue->vectors = calloc((size_t)capacity, sizeof(struct iovec));
    queue->destinations = calloc((size_t)capacity, sizeof(struct sockaddr_storage));
    if (!queue->copies || !queue->messages || !queue->vectors || !queue->destinations) {
        shroud_send_queue_destroy(queue);
        return NULL;
    }
    return queue;
}

void shroud_send_queue_destroy(shroud_send_queue *queue) {
    if (!queue) return;
    free(queue->copies);
    free(queue->messages);
    free(queue->vectors);
    free(queue->destinations);
    free(queue);
}

void shroud_send_queue_add(shroud_send_queue *queue, int fd, const void *data, size_t length, const shroud_addr *to) {
    if (queue->count == queue->capacity) shroud_send_queue_flush(queue, fd);
    int i = queue->count++;
    socklen_t address_length;
    to_sockaddr(to, &queue->destinations[i], &address_length);
    queue->vectors[i].iov_base = (void *)data;
    queue->vectors[i].iov_len = length;
    struct msghdr *header = &queue->messages[i].msg_hdr;
    memset(header, 0, sizeof(*header));
    header->msg_iov = &queue->vectors[i];
    header->msg_iovlen = 1;
    header->msg_name = &queue->destinations[i];
    header->msg_namelen = address_length;
}

void shroud_send_queue_add_copy(shroud_send_queue *queue, int fd, const void *data, size_t length, const shroud_addr *to) {
    if (length > (size_t)queue->slot_bytes) {
        queue->failed++;
        return;
    }
    if (queue->copies_used == queue->copy_slots || queue->count == queue->capacity) shroud_send_queue_flush(queue, fd);
    uint8_t *slot = queue->copies + (size_t)queue->copies_used++ * (size_t)queue->slot_bytes;
    memcpy(slot, data, length);
    shroud_send_queue_add(queue, fd, slot, length, to);
}

void shroud_send_queue_flush(shroud_send_queue *queue, int fd) {
    int offset = 0;
    while (offset < queue->count) {
        int sent = sendmmsg(fd, queue->messages + offset, (unsigned)(queue->count - offset), 0);
        if (sent < 0) {
            if (errno == EINTR) continue;
            // The first datagram was refused (e.g. an ICMP error reported for an earlier send):
            // skip it and send the rest.
            queue->failed++;
            offset++;
            continue;
        }
        queue->sent += (uint64_t)sent;
        offset += sent;
    }
    queue->count = 0;
    queue->copies_used = 0;
}

uint64_t shroud_send_queue_sent(const shroud_send_queue *queue) { return queue->sent; }
uint64_t shroud_send_queue_failed(const shroud_send_queue *queue) { return queue->failed; }

// MARK: Load generation

#include <sys/epoll.h>
#include <time.h>

int shroud_name_current_thread(const char *name) {
    int result = pthread_setname_np(pthread_self(), name);
    return -result;
}

uint64_t shroud_monotonic_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

uint64_t shroud_load_speak(const int *fds, const uint32_t *stream_ids, int count, const shroud_addr *to,
                           size_t size, uint64_t interval_ns, uint64_t until_ns) {
    if (count <= 0 || size < 24 || size > 1200) return 0;
    struct sockaddr_storage address;
    socklen_t address_length;
    to_sockaddr(to, &address, &address_length);
    uint8_t packet[1200];
    memset(packet, 0xA5, sizeof(packet));
    uint64_t sent = 0;
    uint32_t sequence = 0;
    uint64_t start = shroud_monotonic_ns();
    uint64_t step = interval_ns / (uint64_t)count;
    for (uint64_t tick = 0;; tick++) {
        uint64_t due = start + tick * step;
        uint64_t now = shroud_monotonic_ns();
        if (due >= until_ns) break;
        if (due > now) {
            struct timespec wait = {.tv_sec = (time_t)((due - now) / 1000000000ull), .tv_nsec = (long)((due - now) % 1000000000ull)};
            nanosleep(&wait, NULL);
        }
        int speaker = (int)(tick % (uint64_t)count);
        if (speaker == 0 && tick > 0) sequence++;
        packet[0] = 0x40; packet[1] = 0; packet[2] = 1; packet[3] = 0;
        put32(packet + 4, stream_ids[speaker]);
        put32(packet + 8, sequence);
        put32(packet + 12, sequence);
        uint64_t stamp = shroud_monotonic_ns();
        memcpy(packet + 16, &stamp, sizeof(stamp));
        if (sendto(fds[speaker], packet, size, 0, (struct sockaddr *)&address, address_length) == (ssize_t)size) sent++;
    }
    return sent;
}

uint64_t shroud_load_listen(const int *fds, int count, uint64_t until_ns, uint64_t *histogram, int buckets) {
    int poller = epoll_create1(EPOLL_CLOEXEC);
    if (poller < 0) return 0;
    for (int i = 0; i < count; i++) {
        struct epoll_event event = {.events = EPOLLIN, .data.fd = fds[i]};
        epoll_ctl(poller, EPOLL_CTL_ADD, fds[i], &event);
    }
    enum { batch = 64 };
    static __thread uint8_t data[batch][1200];
    struct mmsghdr messages[batch];
    struct iovec vectors[batch];
    struct epoll_event ready[256];
    uint64_t received = 0;
    for (;;) {
        uint64_t now = shroud_monotonic_ns();
        if (now >= until_ns) break;
        int n = epoll_wait(poller, ready, 256, (int)((until_ns - now) / 1000000ull) + 1);
        for (int r = 0; r < n; r++) {
            for (;;) {
                for (int i = 0; i < batch; i++) {
                    vectors[i].iov_base = data[i];
                    vectors[i].iov_len = sizeof(data[i]);
                    memset(&messages[i].msg_hdr, 0, sizeof(messages[i].msg_hdr));
                    messages[i].msg_hdr.msg_iov = &vectors[i];
                    messages[i].msg_hdr.msg_iovlen = 1;
                }
                int got = recvmmsg(ready[r].data.fd, messages, batch, MSG_DONTWAIT, NULL);
                if (got <= 0) break;
                uint64_t arrival = shroud_monotonic_ns();
                for (int i = 0; i < got; i++) {
                    received++;
                    if (messages[i].msg_len < 24 || !histogram) continue;
                    uint64_t stamp;
                    memcpy(&stamp, data[i] + 16, sizeof(stamp));
                    uint64_t bucket = arrival > stamp ? (arrival - stamp) / 10000ull : 0;
                    histogram[bucket < (uint64_t)buckets ? bucket : (uint64_t)buckets - 1]++;
                }
                if (got < batch) break;
            }
        }
    }
    close(poller);
    return received;
}

uint64_t shroud_load_sendmmsg(int fd, const shroud_addr *to, size_t size, int batch, uint64_t until_ns) {
    if (batch <= 0 || batch > 1024 || size > 1200) return 0;
    struct sockaddr_storage address;
    socklen_t address_length;
    to_sockaddr(to, &address, &address_length);
    uint8_t packet[1200];
    memset(packet, 0xA5, sizeof(packet));
    struct mmsghdr messages[1024];
    struct iovec vector = {.iov_base = packet, .iov_len = size};
    for (int i = 0; i < batch; i++) {
        memset(&messages[i], 0, sizeof(messages[i]));
        messages[i].msg_hdr.msg_iov = &vector;
        messages[i].msg_hdr.msg_iovlen = 1;
        messages[i].msg_hdr.msg_name = &address;
        messages[i].msg_hdr.msg_namelen = address_length;
    }
    uint64_t sent = 0;
    while (shroud_monotonic_ns() < until_ns) {
        int n = sendmmsg(fd, messages, (unsigned)batch, 0);
        if (n > 0) sent += (uint64_t)n;
    }
    return sent;
}

int shroud_malloc_keep_large_blocks(int mmap_threshold, int trim_threshold) {
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1;
}
