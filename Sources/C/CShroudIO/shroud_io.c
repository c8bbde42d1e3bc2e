// recvmmsg, sendmmsg and struct mmsghdr are GNU extensions.
#define _GNU_SOURCE
#include "CShroudIO.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
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
