// SPDX-License-Identifier: GPL-2.0

//! kTLS state in the blob (docs/design/tls.md). `capture` reads, under the socket lock,
//! what TLS_TX/TLS_RX's getsockopt would report (version, cipher, key, salt, the IV and
//! record sequence number of the next record) and refuses a socket whose TLS layer
//! holds bytes the TCP queues do not. `Tls::info` builds what the setsockopt takes
//! back on import. Key material lives in `Keys`, which wipes itself when dropped.

use crate::bindings as b;
use crate::compat;
use crate::genl::{errno, AttrSink, ChunkedAttr, Message};
use crate::tcp_state::Refusal;
use crate::uapi::state as a;
use core::ptr::{addr_of, addr_of_mut};
use kernel::c_str;
use kernel::prelude::*;

/// Bytes of a record sequence number for every kTLS cipher.
pub(crate) const REC_SEQ: usize = 8;
/// Largest key, IV and salt of the ciphers below.
const KEY_MAX: usize = 32;
const IV_MAX: usize = 12;
const SALT_MAX: usize = 4;
/// Largest `tls12_crypto_info_*`: the header (version, cipher) and the fields.
pub(crate) const INFO_MAX: usize = 4 + IV_MAX + KEY_MAX + SALT_MAX + REC_SEQ;

/// A cipher kTLS knows, with the sizes of its `tls12_crypto_info_*` fields (the UAPI
/// structs lay them out as header, IV, key, salt, record sequence, unpadded).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cipher {
    pub(crate) id: u16,
    pub(crate) iv: usize,
    pub(crate) key: usize,
    pub(crate) salt: usize,
}

macro_rules! ciphers {
    ($($id:ident, $iv:ident, $key:ident, $salt:ident;)*) => {
        const CIPHERS: &[Cipher] = &[$(Cipher {
            id: b::$id as u16,
            iv: b::$iv as usize,
            key: b::$key as usize,
            salt: b::$salt as usize,
        }),*];
    };
}

ciphers! {
    TLS_CIPHER_AES_GCM_128, TLS_CIPHER_AES_GCM_128_IV_SIZE, TLS_CIPHER_AES_GCM_128_KEY_SIZE, TLS_CIPHER_AES_GCM_128_SALT_SIZE;
    TLS_CIPHER_AES_GCM_256, TLS_CIPHER_AES_GCM_256_IV_SIZE, TLS_CIPHER_AES_GCM_256_KEY_SIZE, TLS_CIPHER_AES_GCM_256_SALT_SIZE;
    TLS_CIPHER_AES_CCM_128, TLS_CIPHER_AES_CCM_128_IV_SIZE, TLS_CIPHER_AES_CCM_128_KEY_SIZE, TLS_CIPHER_AES_CCM_128_SALT_SIZE;
    TLS_CIPHER_CHACHA20_POLY1305, TLS_CIPHER_CHACHA20_POLY1305_IV_SIZE, TLS_CIPHER_CHACHA20_POLY1305_KEY_SIZE, TLS_CIPHER_CHACHA20_POLY1305_SALT_SIZE;
    TLS_CIPHER_SM4_GCM, TLS_CIPHER_SM4_GCM_IV_SIZE, TLS_CIPHER_SM4_GCM_KEY_SIZE, TLS_CIPHER_SM4_GCM_SALT_SIZE;
    TLS_CIPHER_SM4_CCM, TLS_CIPHER_SM4_CCM_IV_SIZE, TLS_CIPHER_SM4_CCM_KEY_SIZE, TLS_CIPHER_SM4_CCM_SALT_SIZE;
    TLS_CIPHER_ARIA_GCM_128, TLS_CIPHER_ARIA_GCM_128_IV_SIZE, TLS_CIPHER_ARIA_GCM_128_KEY_SIZE, TLS_CIPHER_ARIA_GCM_128_SALT_SIZE;
    TLS_CIPHER_ARIA_GCM_256, TLS_CIPHER_ARIA_GCM_256_IV_SIZE, TLS_CIPHER_ARIA_GCM_256_KEY_SIZE, TLS_CIPHER_ARIA_GCM_256_SALT_SIZE;
}

impl Cipher {
    pub(crate) fn find(id: u16) -> Option<Self> {
        CIPHERS.iter().copied().find(|c| c.id == id)
    }

    /// Size of the `tls12_crypto_info_*` struct TLS_TX/TLS_RX take.
    fn info_len(&self) -> usize {
        4 + self.iv + self.key + self.salt + REC_SEQ
    }
}

/// Overwrites `bytes` with zeros in a way the compiler keeps (`memzero_explicit`).
pub(crate) fn wipe(bytes: &mut [u8]) {
    for x in bytes.iter_mut() {
        // SAFETY: a valid, aligned `u8` of the slice.
        unsafe { core::ptr::write_volatile(x, 0) };
    }
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

/// One direction's secrets and position. Only the cipher's sizes of each array count.
#[derive(Default)]
pub(crate) struct Keys {
    pub(crate) key: [u8; KEY_MAX],
    pub(crate) iv: [u8; IV_MAX],
    pub(crate) salt: [u8; SALT_MAX],
    pub(crate) rec_seq: [u8; REC_SEQ],
}

impl Drop for Keys {
    fn drop(&mut self) {
        wipe(&mut self.key);
        wipe(&mut self.iv);
        wipe(&mut self.salt);
    }
}

/// The kTLS state of a socket: both directions share version and cipher (the kernel
/// requires it); either may be unset.
pub(crate) struct Tls {
    pub(crate) version: u16,
    pub(crate) cipher: Cipher,
    pub(crate) tx: Option<Keys>,
    pub(crate) rx: Option<Keys>,
    pub(crate) tx_zerocopy: bool,
    pub(crate) rx_no_pad: bool,
    /// Bytes of the next record the receive parser already took out of the TCP queue
    /// (its copy mode): they go in front of the blob's receive queue. Not an attribute.
    pub(crate) rx_held: u32,
    /// Bytes and records of decrypted, unread application data (`rx_list`), which
    /// `write_decrypted` puts in the reply.
    pub(crate) rx_decrypted: (u32, u32),
}

/// What kTLS's counters of asynchronous encryptions and decryptions hold when none is
/// in flight: they start at 1 (`tls_set_sw_offload`), and a waiter drops them to 0.
const IDLE: i32 = 1;

/// The TLS record type of application data (RFC 8446 `application_data`).
const RECORD_TYPE_DATA: u8 = 23;
/// The largest plaintext of a record.
const RECORD_MAX: u32 = 1 << 14;

/// Attribute kinds of one direction: key, IV, salt, record sequence.
pub(crate) const TX_ATTRS: [u16; 4] = [
    a::TLS_TX_KEY,
    a::TLS_TX_IV,
    a::TLS_TX_SALT,
    a::TLS_TX_REC_SEQ,
];
pub(crate) const RX_ATTRS: [u16; 4] = [
    a::TLS_RX_KEY,
    a::TLS_RX_IV,
    a::TLS_RX_SALT,
    a::TLS_RX_REC_SEQ,
];

/// Attribute bytes `encode` writes at most: two u16, eight binaries, two u8.
pub(crate) const ENCODED_MAX: usize =
    2 * 8 + 2 * (4 + KEY_MAX + 4 + IV_MAX + 4 + SALT_MAX + 4 + REC_SEQ) + 2 * 8;

/// A socket's upper-layer protocol.
enum Ulp {
    None,
    /// The tls ULP and its context (null only for a TOE device's bypass).
    Tls(*mut b::tls_context),
    Other,
}

/// # Safety
///
/// `sk` must be a TCP socket whose lock the caller holds.
unsafe fn ulp(sk: *mut b::sock) -> Ulp {
    let icsk = sk.cast::<b::inet_connection_sock>();
    // SAFETY: a TCP socket starts with its `inet_connection_sock`; the ULP and its data
    // are set under the socket lock (held) and stay until the socket is freed.
    let (ops, ctx) = unsafe {
        (
            (*icsk).icsk_ulp_ops,
            (*icsk).icsk_ulp_data.cast::<b::tls_context>(),
        )
    };
    // SAFETY: a registered ULP's ops outlive the sockets that use them.
    match unsafe { ops.as_ref() } {
        None => Ulp::None,
        Some(o) if o.name[..4].iter().map(|c| *c as u8).eq(*b"tls\0") => Ulp::Tls(ctx),
        Some(_) => Ulp::Other,
    }
}

fn refuse(code: u32, msg: &'static kernel::str::CStr) -> Refusal {
    (errno(code), msg)
}

/// `list_empty` / `skb_queue_empty` of a list head whose lock (the socket's) is held.
fn list_empty<T>(head: *const T, first: *const core::ffi::c_void) -> bool {
    core::ptr::eq(first, head.cast())
}

impl Tls {
    /// The kTLS state of `sk`, `None` without an upper-layer protocol.
    ///
    /// # Safety
    ///
    /// `sk` must be a TCP socket whose lock the caller holds.
    pub(crate) unsafe fn capture(sk: *mut b::sock, tcp_state: u8) -> Result<Option<Self>, Refusal> {
        // SAFETY: the caller's guarantees.
        let ctx = match unsafe { ulp(sk) } {
            Ulp::None => return Ok(None),
            Ulp::Other => {
                return Err(refuse(
                    b::EOPNOTSUPP,
                    c_str!("sockets with an upper-layer protocol other than tls are not supported"),
                ))
            }
            Ulp::Tls(ctx) => ctx,
        };
        if ctx.is_null() {
            return Err(refuse(
                b::EOPNOTSUPP,
                c_str!("kTLS socket without a TLS context (TOE)"),
            ));
        }
        // SAFETY: the tls ULP's data is its `tls_context`, stable under the socket lock.
        let c = unsafe { &*ctx };
        let (tx_conf, rx_conf) = (u32::from(c.tx_conf()), u32::from(c.rx_conf()));
        if tx_conf > b::TLS_SW || rx_conf > b::TLS_SW {
            return Err(refuse(
                b::EOPNOTSUPP,
                c_str!("kTLS device offload (TLS_HW) cannot be carried: only software kTLS moves"),
            ));
        }
        if tx_conf == b::TLS_BASE && rx_conf == b::TLS_BASE {
            return Err(refuse(
                b::EOPNOTSUPP,
                c_str!("the tls ULP is attached but neither TLS_TX nor TLS_RX is set"),
            ));
        }
        if u32::from(tcp_state) != b::TCP_ESTABLISHED {
            return Err(refuse(
                b::EOPNOTSUPP,
                c_str!("a kTLS socket moves only while ESTABLISHED: the kernel attaches TLS to no other state"),
            ));
        }
        if compat::tls_tx_max_payload(c) != b::PRISM_TLS_MAX_PAYLOAD_SIZE {
            return Err(refuse(
                b::EOPNOTSUPP,
                c_str!("kTLS TLS_TX_MAX_PAYLOAD_LEN is set, which is not carried"),
            ));
        }
        if tx_conf == b::TLS_SW {
            // SAFETY: TLS_SW's transmit context; its fields change under the socket lock.
            unsafe { Self::tx_idle(c) }?;
        }
        let rx_decrypted = if rx_conf == b::TLS_SW {
            // SAFETY: as above, for the receive context.
            unsafe { Self::rx_idle(c) }?
        } else {
            (0, 0)
        };
        let info = if tx_conf == b::TLS_SW {
            &c.crypto_send
        } else {
            &c.crypto_recv
        };
        // SAFETY: `info` is the union's header, set by the TLS_TX/TLS_RX setsockopt.
        let (version, id) = unsafe { (info.info.as_ref().version, info.info.as_ref().cipher_type) };
        let Some(cipher) = Cipher::find(id) else {
            return Err(refuse(
                b::EOPNOTSUPP,
                c_str!("kTLS cipher unknown to this module"),
            ));
        };
        let keys =
            |crypto: &b::tls_crypto_context, cctx: &b::cipher_context| -> Result<Keys, Refusal> {
                if cipher.info_len() > core::mem::size_of::<b::tls_crypto_context>() {
                    return Err(refuse(
                        b::EOPNOTSUPP,
                        c_str!("kTLS cipher unknown to this module"),
                    ));
                }
                // SAFETY: the union holds the setsockopt's `tls12_crypto_info_*` of this
                // cipher, `info_len` bytes, which fit the union (checked above).
                let raw = unsafe {
                    core::slice::from_raw_parts(addr_of!(*crypto).cast::<u8>(), cipher.info_len())
                };
                let mut k = Keys::default();
                let key_at = 4 + cipher.iv;
                let salt_at = key_at + cipher.key;
                k.key[..cipher.key].copy_from_slice(&raw[key_at..salt_at]);
                k.salt[..cipher.salt].copy_from_slice(&raw[salt_at..salt_at + cipher.salt]);
                // As TLS_TX/TLS_RX's getsockopt: the IV and sequence of the next record
                // live in the cipher context, behind the salt.
                let iv = cctx.iv.iter().skip(cipher.salt).take(cipher.iv);
                for (d, s) in k.iv.iter_mut().zip(iv) {
                    *d = *s as u8;
                }
                for (d, s) in k.rec_seq.iter_mut().zip(cctx.rec_seq.iter()) {
                    *d = *s as u8;
                }
                Ok(k)
            };
        let tx = if tx_conf == b::TLS_SW {
            Some(keys(&c.crypto_send, &c.tx)?)
        } else {
            None
        };
        let rx = if rx_conf == b::TLS_SW {
            Some(keys(&c.crypto_recv, &c.rx)?)
        } else {
            None
        };
        Ok(Some(Self {
            version,
            cipher,
            tx,
            rx,
            tx_zerocopy: c.zerocopy_sendfile() != 0,
            rx_no_pad: c.rx_no_pad() != 0,
            // SAFETY: the socket is locked (caller).
            rx_held: unsafe { held_record(sk) }.map_or(0, |(_, len)| len),
            rx_decrypted,
        }))
    }

    /// Refuses while the transmit side holds a record the TCP send queue does not:
    /// one being built (MSG_MORE, or a sender waiting for memory), encrypted but not
    /// yet queued to TCP, partly queued, or in an asynchronous cipher.
    ///
    /// # Safety
    ///
    /// `c` must be the TLS_SW context of a socket whose lock the caller holds.
    unsafe fn tx_idle(c: &b::tls_context) -> Result<(), Refusal> {
        let tx = c.priv_ctx_tx.cast::<b::tls_sw_context_tx>();
        // SAFETY: TLS_SW's transmit context lives as long as the TLS context.
        let busy = c.pending_open_record_frags
            || !c.partially_sent_record.is_null()
            || unsafe {
                !(*tx).open_rec.is_null()
                    || !list_empty(addr_of!((*tx).tx_list), (*tx).tx_list.next.cast())
                    || core::ptr::read_volatile(addr_of!((*tx).encrypt_pending.counter)) != IDLE
            };
        if busy {
            return Err(refuse(
                b::EAGAIN,
                c_str!("a kTLS record is being built or sent (MSG_MORE, or the send buffer is full): retry once it is out"),
            ));
        }
        Ok(())
    }

    /// Refuses while the receive side holds what the blob cannot carry: a control
    /// record decrypted but not read, a decryption in flight, a pending key update.
    /// Returns the bytes and records of decrypted application data not read yet,
    /// which the blob carries. (A record the parser copied out of the queue is still
    /// ciphertext: `held_record` carries it.)
    ///
    /// # Safety
    ///
    /// `c` must be the TLS_SW context of a socket whose lock the caller holds.
    unsafe fn rx_idle(c: &b::tls_context) -> Result<(u32, u32), Refusal> {
        let rx = c.priv_ctx_rx.cast::<b::tls_sw_context_rx>();
        // SAFETY: TLS_SW's receive context lives as long as the TLS context; its
        // queues and parser change under the socket lock.
        let r = unsafe { &*rx };
        // SAFETY: the socket lock guards the queue; peeking only reads it.
        let held = unsafe { !b::prism_skb_peek_tail(addr_of!(r.async_hold).cast_mut()).is_null() };
        let mut decrypted = (0u32, 0u32);
        // SAFETY: `rx_list` is the context's, locked by the caller.
        for (_, len, kind) in unsafe { records(rx) } {
            if kind != RECORD_TYPE_DATA {
                return Err(refuse(
                    b::EAGAIN,
                    c_str!("a decrypted kTLS control record (alert, handshake) is not read yet: read it first"),
                ));
            }
            if len > RECORD_MAX {
                return Err(refuse(
                    b::EIO,
                    c_str!("a decrypted kTLS record is larger than a record"),
                ));
            }
            decrypted = (decrypted.0 + len, decrypted.1 + 1);
        }
        if r.strp.stopped() != 0 {
            return Err(refuse(
                b::EIO,
                c_str!("the kTLS receive side stopped after an error"),
            ));
        }
        // SAFETY: atomics of the receive context, read as `atomic_read` does.
        let pending = unsafe { core::ptr::read_volatile(addr_of!(r.decrypt_pending.counter)) };
        if pending != IDLE || held {
            return Err(refuse(
                b::EAGAIN,
                c_str!("a kTLS record is held outside the TCP receive queue: retry"),
            ));
        }
        if compat::tls_key_update_pending(r) {
            return Err(refuse(
                b::EAGAIN,
                c_str!("a TLS 1.3 KeyUpdate arrived: install the new receive key, then export"),
            ));
        }
        Ok(decrypted)
    }

    /// Reply bytes `encode` and `write_decrypted` need at most.
    pub(crate) fn reply_room(&self) -> usize {
        ENCODED_MAX + self.rx_decrypted.0 as usize + 8 * self.rx_decrypted.1 as usize
    }

    /// The attributes of this state, in the blob's order.
    pub(crate) fn encode(&self, msg: &mut impl AttrSink) -> Result {
        msg.put_u16(a::TLS_VERSION, self.version)?;
        msg.put_u16(a::TLS_CIPHER, self.cipher.id)?;
        for (keys, kinds) in [(&self.tx, TX_ATTRS), (&self.rx, RX_ATTRS)] {
            if let Some(k) = keys {
                msg.put(kinds[0], &k.key[..self.cipher.key])?;
                msg.put(kinds[1], &k.iv[..self.cipher.iv])?;
                msg.put(kinds[2], &k.salt[..self.cipher.salt])?;
                msg.put(kinds[3], &k.rec_seq)?;
            }
        }
        msg.put_u8(a::TLS_TX_ZEROCOPY, self.tx_zerocopy.into())?;
        msg.put_u8(a::TLS_RX_NO_PAD, self.rx_no_pad.into())?;
        Ok(())
    }

    /// The `tls12_crypto_info_*` TLS_TX (or TLS_RX) takes for `keys`, written to
    /// `out`; returns its length. The caller wipes `out`.
    pub(crate) fn info(&self, keys: &Keys, out: &mut [u8; INFO_MAX]) -> usize {
        let c = &self.cipher;
        out[..2].copy_from_slice(&self.version.to_ne_bytes());
        out[2..4].copy_from_slice(&c.id.to_ne_bytes());
        let mut at = 4;
        for part in [
            &keys.iv[..c.iv],
            &keys.key[..c.key],
            &keys.salt[..c.salt],
            &keys.rec_seq[..],
        ] {
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        at
    }
}

/// The protocol whose `disconnect` ends `sk` silently, for a TLS socket: kTLS refuses
/// `disconnect` (its parser may point into the receive queue TCP would free), so its
/// receive parser first lets go of that queue and stops, as it does after an error,
/// and TCP's own `disconnect` (the ULP's saved base protocol) runs. `None` for a socket
/// without the tls ULP.
///
/// # Safety
///
/// `sk` must be a TCP socket whose lock the caller holds, about to be disconnected.
pub(crate) unsafe fn release_for_disconnect(sk: *mut b::sock) -> Option<*mut b::proto> {
    // SAFETY: the caller's guarantees.
    let Ulp::Tls(ctx) = (unsafe { ulp(sk) }) else {
        return None;
    };
    if ctx.is_null() {
        return None;
    }
    // SAFETY: the tls ULP's data is its context; the socket lock guards it.
    let c = unsafe { &mut *ctx };
    if u32::from(c.rx_conf()) == b::TLS_SW {
        // SAFETY: TLS_SW's receive context; its parser changes under the socket lock.
        let strp = unsafe { &mut (*c.priv_ctx_rx.cast::<b::tls_sw_context_rx>()).strp };
        if strp.copy_mode() == 0 && !strp.anchor.is_null() {
            // SAFETY: outside copy mode the anchor only borrows the queue's skbs.
            unsafe { b::prism_skb_forget_frag_list(strp.anchor) };
        }
        // SAFETY: a plain field the parser's readers read with `READ_ONCE`.
        unsafe { core::ptr::write_volatile(&mut strp.msg_ready, false) };
        strp.stm = Default::default();
        strp.set_stopped(1);
    }
    Some(c.sk_proto)
}

/// The next record's bytes the receive parser took out of the TCP queue (copy mode,
/// used when the receive buffer runs short): the skb holding them and their length.
/// They precede the TCP receive queue in sequence space, from the record's start.
///
/// # Safety
///
/// `sk` must be a TCP socket whose lock the caller holds.
pub(crate) unsafe fn held_record(sk: *mut b::sock) -> Option<(*mut b::sk_buff, u32)> {
    // SAFETY: the caller's guarantees.
    let Ulp::Tls(ctx) = (unsafe { ulp(sk) }) else {
        return None;
    };
    // SAFETY: the tls ULP's context (or null), guarded by the socket lock.
    let c = unsafe { ctx.as_ref() }?;
    if u32::from(c.rx_conf()) != b::TLS_SW {
        return None;
    }
    // SAFETY: TLS_SW's receive context and its parser, under the socket lock.
    let strp = unsafe { &(*c.priv_ctx_rx.cast::<b::tls_sw_context_rx>()).strp };
    if strp.copy_mode() == 0 || strp.anchor.is_null() {
        return None;
    }
    // SAFETY: in copy mode the anchor owns the copied bytes; its length counts them.
    let len = unsafe { b::prism_skb_len(strp.anchor) };
    (len > 0).then_some((strp.anchor, len))
}

/// The records of a receive context's `rx_list`: skb, unread bytes, record type.
///
/// # Safety
///
/// `rx` must be a TLS_SW receive context whose socket lock the caller holds for as
/// long as the iterator and its skbs are used.
unsafe fn records(
    rx: *mut b::tls_sw_context_rx,
) -> impl Iterator<Item = (*mut b::sk_buff, u32, u8)> {
    // SAFETY: the caller's guarantees; `rx_list` is a circular list of skbs.
    let head = unsafe { addr_of!((*rx).rx_list) }.cast::<b::sk_buff>();
    // SAFETY: as above; a list head starts with the first skb, and `next` is the first
    // field of `struct sk_buff`.
    let mut skb = unsafe { *head.cast::<*mut b::sk_buff>() };
    core::iter::from_fn(move || {
        if core::ptr::eq(skb, head) {
            return None;
        }
        let this = skb;
        // SAFETY: a queued skb, under the socket lock; its control block is the
        // strparser users' layout (`sk_skb_cb`), as kTLS uses it for `rx_list`.
        unsafe {
            skb = *this.cast::<*mut b::sk_buff>();
            let cb = &*b::prism_sk_skb_cb(this);
            Some((this, cb.strp.strp.full_len.max(0) as u32, cb.tls.control))
        }
    })
}

/// The receive context of `sk`'s TLS_SW receive side, if any.
///
/// # Safety
///
/// `sk` must be a TCP socket whose lock the caller holds.
unsafe fn rx_context(sk: *mut b::sock) -> Option<*mut b::tls_sw_context_rx> {
    // SAFETY: the caller's guarantees.
    let Ulp::Tls(ctx) = (unsafe { ulp(sk) }) else {
        return None;
    };
    // SAFETY: the tls ULP's context (or null), guarded by the socket lock.
    let c = unsafe { ctx.as_ref() }?;
    (u32::from(c.rx_conf()) == b::TLS_SW).then(|| c.priv_ctx_rx.cast::<b::tls_sw_context_rx>())
}

/// Writes the decrypted, unread application data of `sk` as `tls-rx-decrypted`
/// attributes, one per record, as `capture` counted them under the same lock.
///
/// # Safety
///
/// `sk` must be a TCP socket whose lock the caller held since `capture`.
pub(crate) unsafe fn write_decrypted(
    sk: *mut b::sock,
    msg: &mut Message<'_>,
) -> Result<(), Refusal> {
    // SAFETY: the caller's guarantees.
    let Some(rx) = (unsafe { rx_context(sk) }) else {
        return Ok(());
    };
    // SAFETY: as above.
    for (skb, len, _) in unsafe { records(rx) } {
        if len == 0 {
            continue;
        }
        // SAFETY: as in `records`.
        let offset = unsafe { (*b::prism_sk_skb_cb(skb)).strp.strp.offset };
        let mut out = ChunkedAttr::new(msg, a::TLS_RX_DECRYPTED, len as usize, len as usize);
        // SAFETY: the record's unread bytes are `len` bytes from `offset` of a queued
        // skb, under the socket lock.
        unsafe { out.append_skb(skb, offset.max(0) as usize, len as usize) }.map_err(|_| {
            refuse(
                b::EIO,
                c_str!("a decrypted kTLS record does not fit the reply"),
            )
        })?;
    }
    Ok(())
}

/// Queues `records` (decrypted application data from a blob) for the first reads of
/// `sk`, whose TLS_RX is set: they go on the receive context's `rx_list` as kTLS's
/// own partly read records do.
///
/// # Safety
///
/// `sk` must be a TCP socket whose lock the caller holds, with TLS_RX set, reachable
/// by nobody else yet.
pub(crate) unsafe fn queue_decrypted(sk: *mut b::sock, records: &[&[u8]]) -> Result<(), Refusal> {
    if records.is_empty() {
        return Ok(());
    }
    // SAFETY: the caller's guarantees.
    let Some(rx) = (unsafe { rx_context(sk) }) else {
        return Err(refuse(
            b::EIO,
            c_str!("decrypted records for a socket without TLS_RX"),
        ));
    };
    for r in records {
        // SAFETY: plain allocation; `GFP_KERNEL` (the caller may sleep).
        let skb = unsafe { b::prism_alloc_skb(r.len() as u32) };
        if skb.is_null() {
            return Err(refuse(
                b::ENOMEM,
                c_str!("no memory for the decrypted kTLS records"),
            ));
        }
        // SAFETY: the fresh skb has room for `r.len()` bytes at its tail; its control
        // block is zeroed by the allocation and laid out as kTLS reads `rx_list`'s.
        unsafe {
            let dst = b::skb_put(skb, r.len() as u32);
            core::ptr::copy_nonoverlapping(r.as_ptr(), dst.cast::<u8>(), r.len());
            let cb = &mut *b::prism_sk_skb_cb(skb);
            cb.strp.strp.full_len = r.len() as i32;
            cb.strp.strp.offset = 0;
            cb.tls.control = RECORD_TYPE_DATA;
            b::prism_skb_queue_tail(addr_of_mut!((*rx).rx_list), skb);
        }
    }
    Ok(())
}

/// One anonymous page mapped in the calling process, unmapped when dropped: a user
/// pointer for setsockopt paths that only copy user memory correctly.
pub(crate) struct UserPage {
    addr: usize,
}

/// Bytes mapped: a page holds any `tls12_crypto_info_*`.
const USER_PAGE: usize = 4096;

impl UserPage {
    /// Maps the page; EFAULT for a caller without an address space.
    pub(crate) fn map() -> Result<Self> {
        // SAFETY: an anonymous private mapping in the current process (the netlink
        // sender, in whose context a request is handled).
        let addr = unsafe {
            b::vm_mmap(
                core::ptr::null_mut(),
                0,
                USER_PAGE as core::ffi::c_ulong,
                b::PRISM_PROT_RW,
                b::PRISM_MAP_PRIVATE_ANON,
                0,
            )
        } as usize;
        // vm_mmap returns an address, or a negative errno cast to one.
        if addr == 0 || addr > usize::MAX - 4095 {
            return Err(EFAULT);
        }
        Ok(Self { addr })
    }

    pub(crate) fn addr(&self) -> *mut core::ffi::c_void {
        self.addr as *mut _
    }

    /// Copies `bytes` to the start of the page.
    pub(crate) fn fill(&self, bytes: &[u8]) -> Result {
        if bytes.len() > USER_PAGE {
            return Err(EINVAL);
        }
        // SAFETY: the page is mapped writable for `USER_PAGE` bytes; the copy checks
        // the user address.
        let left = unsafe {
            b::prism_copy_to_user(
                self.addr(),
                bytes.as_ptr().cast(),
                bytes.len() as core::ffi::c_ulong,
            )
        };
        if left == 0 {
            Ok(())
        } else {
            Err(EFAULT)
        }
    }

    /// Zeroes the page (its contents were secret).
    pub(crate) fn wipe(&self) {
        // SAFETY: as in `fill`.
        unsafe { b::prism_clear_user(self.addr(), USER_PAGE as core::ffi::c_ulong) };
    }
}

impl Drop for UserPage {
    fn drop(&mut self) {
        self.wipe();
        // SAFETY: the mapping made in `map`, released once.
        unsafe { b::vm_munmap(self.addr as core::ffi::c_ulong, USER_PAGE) };
    }
}
