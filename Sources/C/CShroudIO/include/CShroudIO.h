// Batched UDP I/O for the relay's media plane: recvmmsg/sendmmsg, which Glibc's Swift module does
// not expose. Buffers are allocated once per batch object; nothing allocates per datagram.
#ifndef CSHROUDIO_H
#define CSHROUDIO_H

#include <stddef.h>
#include <stdint.h>

/// A peer address as integers (mirrors ShroudRelayCore.MediaAddress). IPv4: family 4, the
/// address in the low 32 bits of `low` in host order. IPv6: family 6, bytes 0-7 in `high` and
/// 8-15 in `low`, big-endian.
typedef struct {
    uint64_t high;
    uint64_t low;
    uint16_t port;
    uint8_t family;
} shroud_addr;

/// Opens a UDP socket bound to host:port (port 0 picks one; the bound port is written back).
/// Returns the descriptor, or -errno. `buffer_bytes` sets SO_RCVBUF and SO_SNDBUF when > 0.
int shroud_udp_open(const char *host, uint16_t port, uint16_t *bound_port, int buffer_bytes);
void shroud_udp_close(int fd);

/// Sends one datagram. Returns bytes sent or -errno.
long shroud_udp_sendto(int fd, const void *data, size_t length, const shroud_addr *to);

/// Waits up to timeout_ms for one datagram and receives it. Returns its full length (which may
/// exceed `capacity`: the datagram was cut), 0 on timeout, or -errno.
long shroud_udp_recvfrom(int fd, void *buffer, size_t capacity, shroud_addr *from, int timeout_ms);

/// Receive side: `capacity` slots of `slot_bytes` each.
typedef struct shroud_recv_batch shroud_recv_batch;
shroud_recv_batch *shroud_recv_batch_create(int capacity, int slot_bytes);
void shroud_recv_batch_destroy(shroud_recv_batch *batch);
/// Waits up to timeout_ms for the socket to be readable, then takes as many datagrams as are
/// queued (at most the capacity) with one recvmmsg. Returns the count, 0 on timeout, or -errno.
int shroud_recv_batch_receive(int fd, shroud_recv_batch *batch, int timeout_ms);
/// Datagram i of the last receive: its bytes, its full length (MSG_TRUNC: larger than the slot when
/// it was cut) and its source.
const uint8_t *shroud_recv_batch_data(const shroud_recv_batch *batch, int index);
long shroud_recv_batch_length(const shroud_recv_batch *batch, int index);
void shroud_recv_batch_source(const shroud_recv_batch *batch, int index, shroud_addr *from);

/// Send side: up to `capacity` queued datagrams, each either a reference to bytes the caller keeps
/// valid until the next flush, or a copy into one of `copy_slots` slots of `slot_bytes`.
typedef struct shroud_send_queue shroud_send_queue;
shroud_send_queue *shroud_send_queue_create(int capacity, int copy_slots, int slot_bytes);
void shroud_send_queue_destroy(shroud_send_queue *queue);
/// Queue a datagram by reference; flushes first (on fd) when the queue is full.
void shroud_send_queue_add(shroud_send_queue *queue, int fd, const void *data, size_t length, const shroud_addr *to);
/// Queue a copy; flushes first when the queue or the copy slots are full. Longer than a slot: dropped.
void shroud_send_queue_add_copy(shroud_send_queue *queue, int fd, const void *data, size_t length, const shroud_addr *to);
/// Sends everything queued with sendmmsg (as many calls as needed) and empties the queue.
void shroud_send_queue_flush(shroud_send_queue *queue, int fd);
/// Datagrams handed to the kernel, and datagrams the kernel refused (e.g. ECONNREFUSED), since creation.
uint64_t shroud_send_queue_sent(const shroud_send_queue *queue);
uint64_t shroud_send_queue_failed(const shroud_send_queue *queue);

/// Names the calling thread for the kernel (at most 15 bytes: glibc refuses a longer name), so `top -H` and
/// /proc/<pid>/task/<tid>/comm show it. Returns 0 or -errno.
int shroud_name_current_thread(const char *name);

// MARK: Load generation (tools/loadgen media): C loops, so the generator is not the bottleneck.

/// CLOCK_MONOTONIC in nanoseconds.
uint64_t shroud_monotonic_ns(void);

/// Each of `count` speaker sockets sends one media datagram of `size` bytes (>= 24) to `to` every
/// `interval_ns`, staggered evenly, until `until_ns`: a valid media header (stream ids[i],
/// consecutive sequence and frame numbers) and the send time (monotonic ns) at byte 16.
/// Returns datagrams sent.
uint64_t shroud_load_speak(const int *fds, const uint32_t *stream_ids, int count, const shroud_addr *to,
                           size_t size, uint64_t interval_ns, uint64_t until_ns);

/// Receives on all `count` sockets (epoll + recvmmsg) until `until_ns`. Counts datagrams and
/// records the latency (now − the send time at byte 16) of each into `histogram` (10 µs buckets,
/// `buckets` of them; the last bucket takes everything later). Returns datagrams received.
uint64_t shroud_load_listen(const int *fds, int count, uint64_t until_ns, uint64_t *histogram, int buckets);

/// The physical limit: one thread sending `size`-byte datagrams to `to` with sendmmsg in batches
/// of `batch` until `until_ns`. Returns datagrams the kernel accepted.
uint64_t shroud_load_sendmmsg(int fd, const shroud_addr *to, size_t size, int batch, uint64_t until_ns);

/// mallopt(M_MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD), which Glibc's Swift module does not
/// expose either: allocations up to `mmap_threshold` bytes come from the heap and up to
/// `trim_threshold` free bytes stay there for reuse. Returns 1 when both were set.
int shroud_malloc_keep_large_blocks(int mmap_threshold, int trim_threshold);

#endif
