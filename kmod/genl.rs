// SPDX-License-Identifier: GPL-2.0

//! Safe wrappers over the generic netlink calls the command handlers need: reading a
//! request's attributes, answering with an extended-ack message, building a reply.

use crate::bindings as b;
use crate::compat;
use crate::pernet;
use core::ffi::{c_int, c_void};
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use kernel::c_str;
use kernel::prelude::*;
use kernel::str::CStr;

/// Builds a kernel error from one of the uapi errno constants.
pub(crate) fn errno(code: u32) -> Error {
    // Errno constants are small positive numbers; `from_errno` wants them negated.
    Error::from_errno(-(code as c_int))
}

/// A command handler: reads the request, sends its reply, or fails with an errno.
pub(crate) type Handler = fn(&Request<'_>) -> Result;

/// Runs `handler` for a `doit` callback and turns its result into an errno.
///
/// # Safety
///
/// `info` must be the `genl_info` that genetlink passed to a `doit` callback whose
/// operation was validated against a policy of `maxattr + 1` entries.
pub(crate) unsafe fn dispatch(info: *mut b::genl_info, maxattr: u16, handler: Handler) -> c_int {
    // SAFETY: the caller guarantees `info` is valid for the whole callback.
    let info = unsafe { &*info };
    let req = Request { info, maxattr };
    // SAFETY: genetlink points `genlhdr` at the request's header, which it checked is
    // there before calling an operation.
    let version = unsafe { info.genlhdr.as_ref() }.map_or(0, |h| h.version);
    // SAFETY: the request's namespace lives while it is handled.
    let count_error = || unsafe { pernet::bump(req.net(), |s| &s.errors) };
    if u32::from(version) != crate::uapi::PROTO_VERSION {
        count_error();
        req.set_err(
            None,
            c_str!("unsupported protocol version in the generic netlink header: send 1"),
        );
        return errno(b::EOPNOTSUPP).to_errno();
    }
    match handler(&req) {
        Ok(()) => 0,
        Err(e) => {
            count_error();
            e.to_errno()
        }
    }
}

/// A validated request, alive for the duration of one `doit` callback.
pub(crate) struct Request<'a> {
    info: &'a b::genl_info,
    maxattr: u16,
}

impl Request<'_> {
    /// The attribute `kind` if the request carried it.
    pub(crate) fn attr(&self, kind: u16) -> Option<&b::nlattr> {
        if kind > self.maxattr || self.info.attrs.is_null() {
            return None;
        }
        // SAFETY: genetlink parsed the request into an array of `maxattr + 1` entries
        // (checked above), each null or pointing into the request skb.
        unsafe { (*self.info.attrs.add(kind as usize)).as_ref() }
    }

    /// Every attribute of the request in order, repeated ones included (the parsed
    /// array keeps only the last of each type).
    pub(crate) fn all_attrs(&self) -> AttrIter<'_> {
        let mut len: c_int = 0;
        // SAFETY: `info` belongs to a validated request whose attributes start right
        // after the generic netlink header (the family has no user header).
        let start = unsafe { b::prism_genl_request_attrs(self.info, &mut len) };
        AttrIter {
            next: start.cast(),
            left: len.max(0) as usize,
            _req: PhantomData,
        }
    }

    /// The network namespace of the requesting netlink socket.
    pub(crate) fn net(&self) -> *mut b::net {
        // SAFETY: `info` is valid for the request.
        unsafe { b::prism_genl_info_net(self.info) }
    }

    /// The u32 attribute `kind`; its length was checked by the policy.
    pub(crate) fn attr_u32(&self, kind: u16) -> Option<(u32, &b::nlattr)> {
        // SAFETY: the policy of every u32 attribute enforces a 4-byte payload.
        self.attr(kind)
            .map(|a| (unsafe { b::prism_nla_get_u32(a) }, a))
    }

    /// The payload of attribute `kind`, with the attribute (for extack).
    pub(crate) fn attr_bytes(&self, kind: u16) -> Option<(&[u8], &b::nlattr)> {
        self.attr(kind).map(|a| {
            // SAFETY: genetlink validated the attribute's header and length; the payload
            // follows the 4-byte header inside the request skb, which outlives `self`.
            let data = unsafe {
                core::slice::from_raw_parts(
                    core::ptr::from_ref(a).cast::<u8>().add(4),
                    usize::from(a.nla_len).saturating_sub(4),
                )
            };
            (data, a)
        })
    }

    /// Sets the extended-ack message, pointing at `attr` when given.
    pub(crate) fn set_err(&self, attr: Option<&b::nlattr>, msg: &'static CStr) {
        let extack = self.info.extack;
        if extack.is_null() {
            return;
        }
        // SAFETY: `extack` belongs to this request and outlives the callback; the message
        // is static, as `NL_SET_ERR_MSG` requires, and `attr` points into the request.
        unsafe {
            (*extack)._msg = msg.as_char_ptr().cast();
            if let Some(attr) = attr {
                (*extack).bad_attr = attr;
            }
        }
    }

    /// Starts a reply with room for `size` bytes of attributes.
    pub(crate) fn reply_sized(&self, cmd: u8, size: usize) -> Result<Message<'_>> {
        let mut msg = Message::new(size)?;
        // SAFETY: `msg.skb` is a fresh netlink skb and `info.family` is the registered
        // family that received the request.
        let hdr = unsafe {
            b::genlmsg_put(
                msg.skb.as_ptr(),
                self.info.snd_portid,
                self.info.snd_seq,
                self.info.family,
                0,
                cmd,
            )
        };
        if hdr.is_null() {
            return Err(errno(b::EMSGSIZE));
        }
        msg.hdr = hdr;
        msg.req = Some(self);
        Ok(msg)
    }
}

/// Iterator over the attributes of a request.
pub(crate) struct AttrIter<'a> {
    next: *const u8,
    left: usize,
    _req: PhantomData<&'a b::nlattr>,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = &'a b::nlattr;

    fn next(&mut self) -> Option<Self::Item> {
        const HDR: usize = core::mem::size_of::<b::nlattr>();
        if self.left < HDR {
            return None;
        }
        // SAFETY: at least a header's worth of the validated request remains; netlink
        // attributes are 4-byte aligned.
        let nla = unsafe { &*self.next.cast::<b::nlattr>() };
        let len = usize::from(nla.nla_len);
        if len < HDR || len > self.left {
            return None;
        }
        let step = ((len + 3) & !3).min(self.left);
        // SAFETY: `step` stays within the remaining bytes.
        self.next = unsafe { self.next.add(step) };
        self.left -= step;
        Some(nla)
    }
}

/// A generic netlink message being built; freed unless it was sent.
pub(crate) struct Message<'a> {
    skb: NonNull<b::sk_buff>,
    hdr: *mut c_void,
    req: Option<&'a Request<'a>>,
}

impl<'a> Message<'a> {
    fn new(size: usize) -> Result<Self> {
        // SAFETY: plain allocation; GFP_KERNEL is fine, handlers run in process context.
        let skb = unsafe { b::prism_genlmsg_new(size, kernel::bindings::GFP_KERNEL) };
        let skb = NonNull::new(skb).ok_or(ENOMEM)?;
        Ok(Self {
            skb,
            hdr: core::ptr::null_mut(),
            req: None,
        })
    }

    pub(crate) fn put(&mut self, kind: u16, data: &[u8]) -> Result {
        // SAFETY: `skb` is owned by this message.
        unsafe { put_attr(self.skb, kind, data) }
    }

    pub(crate) fn put_u64(&mut self, kind: u16, value: u64, pad: u16) -> Result {
        // SAFETY: `skb` is owned by this message.
        unsafe { put_attr_u64(self.skb, kind, value, pad) }
    }

    pub(crate) fn put_str(&mut self, kind: u16, value: &CStr) -> Result {
        self.put(kind, compat::cstr_bytes_with_nul(value))
    }

    /// Starts a notification `cmd` of `family` with room for `size` bytes of
    /// attributes, sent by nobody's request.
    ///
    /// # Safety
    ///
    /// `family` must be registered until the message is sent or dropped.
    pub(crate) unsafe fn notification(
        family: *const b::genl_family,
        cmd: u8,
        size: usize,
    ) -> Result<Self> {
        let mut msg = Self::new(size)?;
        // SAFETY: `msg.skb` is a fresh netlink skb; the caller keeps `family` registered.
        msg.hdr = unsafe { b::genlmsg_put(msg.skb.as_ptr(), 0, 0, family, 0, cmd) };
        if msg.hdr.is_null() {
            return Err(errno(b::EMSGSIZE));
        }
        Ok(msg)
    }

    /// Finishes a notification and sends it to the listeners of `group` in `net`.
    /// Returns what netlink says: 0, ESRCH (nobody listens) or ENOBUFS (a listener
    /// missed it).
    ///
    /// # Safety
    ///
    /// `family` must be the registered family the message was started for, `net` alive.
    pub(crate) unsafe fn multicast(
        self,
        family: *const b::genl_family,
        net: *mut b::net,
        group: u32,
    ) -> c_int {
        let this = ManuallyDrop::new(self);
        // SAFETY: `hdr` was returned by `genlmsg_put` on this skb; the multicast takes
        // ownership of the skb whatever it returns. The caller vouches for the rest.
        unsafe {
            b::prism_genlmsg_end(this.skb.as_ptr(), this.hdr);
            b::prism_genlmsg_multicast_netns(
                family,
                net,
                this.skb.as_ptr(),
                0,
                group,
                kernel::bindings::GFP_KERNEL,
            )
        }
    }

    /// Finishes the message and sends it to the requester.
    pub(crate) fn send_reply(self) -> Result {
        let req = self.req.ok_or(EINVAL)?;
        let this = ManuallyDrop::new(self);
        // SAFETY: `hdr` was returned by `genlmsg_put` on this skb; `genlmsg_reply` takes
        // ownership of the skb whatever it returns, so it is not freed again.
        let ret = unsafe {
            b::prism_genlmsg_end(this.skb.as_ptr(), this.hdr);
            b::prism_genlmsg_reply(this.skb.as_ptr(), core::ptr::from_ref(req.info).cast_mut())
        };
        to_result(ret)
    }
}

/// Where attributes go: a message, a block reserved in one, or a count of their size.
pub(crate) trait AttrSink {
    fn put(&mut self, kind: u16, data: &[u8]) -> Result;

    fn put_u8(&mut self, kind: u16, value: u8) -> Result {
        self.put(kind, &[value])
    }

    fn put_u16(&mut self, kind: u16, value: u16) -> Result {
        self.put(kind, &value.to_ne_bytes())
    }

    fn put_u32(&mut self, kind: u16, value: u32) -> Result {
        self.put(kind, &value.to_ne_bytes())
    }
}

/// Bytes an attribute with `len` bytes of payload takes, header and padding included.
const fn attr_total(len: usize) -> usize {
    (core::mem::size_of::<b::nlattr>() + len + 3) & !3
}

impl AttrSink for Message<'_> {
    fn put(&mut self, kind: u16, data: &[u8]) -> Result {
        Message::put(self, kind, data)
    }
}

/// Attributes written straight into a message's skb, 64-bit ones aligned as the
/// architecture needs (which a block sized by a dry run could not be).
pub(crate) trait SkbAttrs: AttrSink {
    fn put_u64(&mut self, kind: u16, value: u64, pad: u16) -> Result;
}

impl SkbAttrs for Message<'_> {
    fn put_u64(&mut self, kind: u16, value: u64, pad: u16) -> Result {
        Message::put_u64(self, kind, value, pad)
    }
}

/// Appends attribute `kind` holding `data` to `skb`; EMSGSIZE when it does not fit.
///
/// # Safety
///
/// `skb` must be a message skb that the caller is writing and nothing else touches.
unsafe fn put_attr(skb: NonNull<b::sk_buff>, kind: u16, data: &[u8]) -> Result {
    let len = c_int::try_from(data.len()).map_err(|_| errno(b::EMSGSIZE))?;
    // SAFETY: the caller's guarantee; `data` is valid for `len` bytes.
    to_result(unsafe { b::nla_put(skb.as_ptr(), kind.into(), len, data.as_ptr().cast()) })
}

/// Appends the 64-bit attribute `kind` to `skb`, after a `pad` attribute where the
/// architecture needs the payload aligned.
///
/// # Safety
///
/// As for [`put_attr`].
unsafe fn put_attr_u64(skb: NonNull<b::sk_buff>, kind: u16, value: u64, pad: u16) -> Result {
    let bytes = value.to_ne_bytes();
    // SAFETY: the caller's guarantee; `bytes` is valid for 8 bytes.
    to_result(unsafe {
        b::nla_put_64bit(
            skb.as_ptr(),
            kind.into(),
            8,
            bytes.as_ptr().cast(),
            pad.into(),
        )
    })
}

/// Counts the bytes of the attributes put, to size an [`AttrBlock`].
#[derive(Default)]
pub(crate) struct AttrSize(pub(crate) usize);

impl AttrSink for AttrSize {
    fn put(&mut self, _kind: u16, data: &[u8]) -> Result {
        self.0 += attr_total(data.len());
        Ok(())
    }
}

/// Attributes written into one zeroed area reserved in a message by a single call,
/// instead of one call (and one tailroom check) per attribute.
pub(crate) struct AttrBlock<'m> {
    area: &'m mut [u8],
    at: usize,
}

impl Message<'_> {
    /// Reserves `size` bytes (a multiple of 4, as [`AttrSize`] counts) for attributes.
    pub(crate) fn block(&mut self, size: usize) -> Result<AttrBlock<'_>> {
        let len = c_int::try_from(size).map_err(|_| errno(b::EMSGSIZE))?;
        // SAFETY: the skb is owned by this message; `nla_reserve_nohdr` checks the
        // tailroom and returns `size` zeroed bytes (rounded up to 4), or NULL.
        let area = unsafe { b::nla_reserve_nohdr(self.skb.as_ptr(), len) };
        if area.is_null() {
            return Err(errno(b::EMSGSIZE));
        }
        // SAFETY: the reserved bytes belong to the skb, which the block's borrow of the
        // message keeps alive and otherwise untouched.
        let area = unsafe { core::slice::from_raw_parts_mut(area.cast::<u8>(), size) };
        Ok(AttrBlock { area, at: 0 })
    }
}

impl AttrSink for AttrBlock<'_> {
    fn put(&mut self, kind: u16, data: &[u8]) -> Result {
        const HDR: usize = core::mem::size_of::<b::nlattr>();
        let total = attr_total(data.len());
        let nla_len = u16::try_from(HDR + data.len()).map_err(|_| errno(b::EMSGSIZE))?;
        let dst = self
            .area
            .get_mut(self.at..self.at + total)
            .ok_or_else(|| errno(b::EMSGSIZE))?;
        let (hdr, payload) = dst
            .split_first_chunk_mut::<HDR>()
            .ok_or_else(|| errno(b::EMSGSIZE))?;
        let [l0, l1] = nla_len.to_ne_bytes();
        let [k0, k1] = kind.to_ne_bytes();
        *hdr = [l0, l1, k0, k1];
        // The padding after the payload was zeroed by the reservation.
        payload
            .get_mut(..data.len())
            .ok_or_else(|| errno(b::EMSGSIZE))?
            .copy_from_slice(data);
        self.at += total;
        Ok(())
    }
}

impl AttrBlock<'_> {
    /// Whether the block was filled exactly.
    pub(crate) fn full(&self) -> bool {
        self.at == self.area.len()
    }
}

/// One message of a dump, written into the dump's skb; taken back out unless ended.
pub(crate) struct DumpMsg {
    skb: NonNull<b::sk_buff>,
    hdr: NonNull<c_void>,
}

impl DumpMsg {
    /// Starts a `cmd` message of the dump `cb` in `skb`; `None` when `skb` is full.
    ///
    /// # Safety
    ///
    /// `skb` and `cb` must be the arguments of a genetlink `dumpit` call, and the
    /// message must be ended or dropped within that call.
    pub(crate) unsafe fn begin(
        skb: *mut b::sk_buff,
        cb: *mut b::netlink_callback,
        cmd: u8,
    ) -> Option<Self> {
        // SAFETY: the caller passes a live dump; the family is the one dumping.
        let hdr = unsafe { b::prism_genlmsg_put_dump(skb, cb, cmd) };
        Some(Self {
            skb: NonNull::new(skb)?,
            hdr: NonNull::new(hdr)?,
        })
    }

    /// Completes the message in the dump.
    pub(crate) fn end(self) {
        let this = ManuallyDrop::new(self);
        // SAFETY: `hdr` was put on this skb by `begin`.
        unsafe { b::prism_genlmsg_end(this.skb.as_ptr(), this.hdr.as_ptr()) };
    }
}

impl AttrSink for DumpMsg {
    fn put(&mut self, kind: u16, data: &[u8]) -> Result {
        // SAFETY: the skb is the dump's, alive for this message.
        unsafe { put_attr(self.skb, kind, data) }
    }
}

impl SkbAttrs for DumpMsg {
    fn put_u64(&mut self, kind: u16, value: u64, pad: u16) -> Result {
        // SAFETY: as above.
        unsafe { put_attr_u64(self.skb, kind, value, pad) }
    }
}

impl Drop for DumpMsg {
    fn drop(&mut self) {
        // SAFETY: a message not ended is trimmed off the skb it was started on.
        unsafe { b::prism_genlmsg_cancel(self.skb.as_ptr(), self.hdr.as_ptr()) };
    }
}

/// One byte string written into a message as consecutive attributes of one kind, each
/// at most `chunk` bytes, filled in place: the bytes are copied once, from their source
/// into the message.
pub(crate) struct ChunkedAttr<'m, 'a> {
    msg: &'m mut Message<'a>,
    kind: u16,
    chunk: usize,
    /// Bytes not yet reserved.
    left: usize,
    /// Room left in the last reserved attribute, and where it starts.
    room: usize,
    cur: *mut u8,
}

impl<'m, 'a> ChunkedAttr<'m, 'a> {
    /// Starts `total` bytes of attributes `kind`; `chunk` must not be zero.
    pub(crate) fn new(msg: &'m mut Message<'a>, kind: u16, total: usize, chunk: usize) -> Self {
        Self {
            msg,
            kind,
            chunk: chunk.max(1),
            left: total,
            room: 0,
            cur: core::ptr::null_mut(),
        }
    }

    /// Appends `len` bytes that `fill(dst, offset)` writes, `offset` counting from the
    /// start of this call; EMSGSIZE beyond the announced total.
    pub(crate) fn append(
        &mut self,
        len: usize,
        mut fill: impl FnMut(&mut [u8], usize) -> Result,
    ) -> Result {
        let mut done = 0;
        while done < len {
            if self.room == 0 {
                let n = self.chunk.min(self.left);
                if n == 0 {
                    return Err(errno(b::EMSGSIZE));
                }
                // SAFETY: the skb is owned by the message; `nla_reserve` returns room
                // for the header and `n` bytes (padding zeroed), or NULL.
                let nla =
                    unsafe { b::nla_reserve(self.msg.skb.as_ptr(), self.kind.into(), n as c_int) };
                if nla.is_null() {
                    return Err(errno(b::EMSGSIZE));
                }
                // SAFETY: the payload follows the 4-byte header (`nla_data`).
                self.cur = unsafe { nla.cast::<u8>().add(core::mem::size_of::<b::nlattr>()) };
                self.room = n;
                self.left -= n;
            }
            let k = self.room.min(len - done);
            // SAFETY: `cur` points to `room` reserved bytes of the skb, which nothing
            // else references while this writer borrows the message.
            let dst = unsafe { core::slice::from_raw_parts_mut(self.cur, k) };
            fill(dst, done)?;
            // SAFETY: stays within the reserved attribute.
            self.cur = unsafe { self.cur.add(k) };
            self.room -= k;
            done += k;
        }
        Ok(())
    }

    /// Appends `len` bytes of `skb`'s data from byte `offset` on.
    ///
    /// # Safety
    ///
    /// `skb` must be an skb the caller keeps alive and unchanged for the call (a queue's,
    /// under its socket's lock) holding at least `offset + len` bytes.
    pub(crate) unsafe fn append_skb(
        &mut self,
        skb: *mut b::sk_buff,
        offset: usize,
        len: usize,
    ) -> Result {
        self.append(len, |dst, at| {
            // SAFETY: the caller's guarantees; `dst` is the part at `at` of the `len` bytes.
            let ret = unsafe {
                b::skb_copy_bits(
                    skb,
                    (offset + at) as c_int,
                    dst.as_mut_ptr().cast(),
                    dst.len() as c_int,
                )
            };
            if ret < 0 {
                Err(EIO)
            } else {
                Ok(())
            }
        })
    }

    /// Whether exactly the announced total was written.
    pub(crate) fn complete(&self) -> bool {
        self.left == 0 && self.room == 0
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        // SAFETY: the skb is still owned by this message (sending forgets it).
        unsafe { b::prism_nlmsg_free(self.skb.as_ptr()) };
    }
}

/// Maps a C return value (0 or a negative errno) to a `Result`.
pub(crate) fn to_result(ret: c_int) -> Result {
    if ret < 0 {
        Err(Error::from_errno(ret))
    } else {
        Ok(())
    }
}
