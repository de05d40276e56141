//! The per-frame rules of an established connection, as small pure functions: what may be sent
//! ([`check_outgoing`]) and what a received frame is ([`classify`]).
//!
//! Both drivers of a connection call them: [`Connection`](crate::Connection) and the `veltix`
//! runtime's connection engine (which keeps its own concurrency design: inline writes, waiters
//! reading their own reply, handler batches), so each rule is written once. What to *do* with a
//! [`Inbound::Reserved`] frame or a [`Inbound::StrayPong`] is the driver's policy:
//! `Connection` closes on the first and counts the second; the runtime drops both like a frame
//! without a handler (counted, logged, link kept), as Python Veltix does.

use crate::types::{system_types, FIRST_USER_CODE, PING, PONG};
use crate::{Error, Generation};

/// May a frame of this type code be sent (and be accepted) on a link of `generation`? User codes
/// (`200..=65535`) and the generation's system types are; other reserved codes are not (a
/// Python peer drops them).
///
/// ```
/// use veltix_proto::{rules::is_allowed_type, Generation};
/// assert!(is_allowed_type(Generation::Gen3, 200));
/// assert!(is_allowed_type(Generation::Gen3, 0)); // PING
/// assert!(!is_allowed_type(Generation::Gen3, 10)); // Gen 1's HEARTBEAT...
/// assert!(is_allowed_type(Generation::Gen1, 10)); // ...is a system type there
/// ```
pub fn is_allowed_type(generation: Generation, code: u16) -> bool {
    code >= FIRST_USER_CODE || system_types(generation).iter().any(|t| t.code() == code)
}

/// Refuses what the peer would drop: a reserved type code other than the generation's system
/// types ([`Error::ReservedTypeCode`]), or a frame (header + `content_len`) over
/// `max_message_size` ([`Error::FrameTooLarge`]).
///
/// ```
/// use veltix_proto::{check_outgoing, Error, Generation};
/// let g = Generation::Gen3; // 15-byte header
/// assert!(check_outgoing(g, 100, 200, 85).is_ok());
/// assert_eq!(check_outgoing(g, 100, 200, 86), Err(Error::FrameTooLarge { len: 101, limit: 100 }));
/// assert_eq!(check_outgoing(g, 100, 199, 0), Err(Error::ReservedTypeCode { code: 199 }));
/// ```
pub fn check_outgoing(
    generation: Generation,
    max_message_size: usize,
    message_type: u16,
    content_len: usize,
) -> Result<(), Error> {
    if !is_allowed_type(generation, message_type) {
        return Err(Error::ReservedTypeCode { code: message_type });
    }
    let len = generation.header_len().saturating_add(content_len);
    if len > max_message_size {
        return Err(Error::FrameTooLarge {
            len,
            limit: max_message_size,
        });
    }
    Ok(())
}

/// What a received frame is to the connection, by [`classify`]; `W` is the driver's waiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound<W> {
    /// A PING: answer it with a PONG carrying the same request id (and nothing else).
    Ping,
    /// A reserved code that is not a system type of the generation.
    Reserved,
    /// The reply (or PONG) a waiter of ours registered for this request id: the waiter, already
    /// taken out of the driver's table.
    Reply(W),
    /// A PONG that no waiter wanted (late, or unsolicited).
    StrayPong,
    /// A frame for the handlers.
    Message,
}

/// Classifies a received frame. PINGs first (answered whatever their id), then reserved codes,
/// then `take_waiter(request_id)`, which removes and returns the waiter of that id if the
/// driver has one (it is called at most once, and only for frames that can be replies).
///
/// ```
/// use std::collections::HashMap;
/// use veltix_proto::{classify, Generation, Inbound};
/// let g = Generation::Gen3;
/// let mut waiters = HashMap::from([(7u32, "send_and_wait #7")]);
/// let mut take = |id: u32| waiters.remove(&id);
/// assert_eq!(classify(g, 0, 7, &mut take), Inbound::Ping);
/// assert_eq!(classify(g, 200, 7, &mut take), Inbound::Reply("send_and_wait #7"));
/// assert_eq!(classify(g, 200, 7, &mut take), Inbound::Message); // answered already
/// assert_eq!(classify(g, 1, 9, &mut take), Inbound::StrayPong);
/// assert_eq!(classify(g, 150, 9, &mut take), Inbound::Reserved);
/// ```
pub fn classify<W>(
    generation: Generation,
    message_type: u16,
    request_id: u32,
    take_waiter: impl FnOnce(u32) -> Option<W>,
) -> Inbound<W> {
    if message_type == PING.code() {
        return Inbound::Ping;
    }
    if !is_allowed_type(generation, message_type) {
        return Inbound::Reserved;
    }
    match take_waiter(request_id) {
        Some(w) => Inbound::Reply(w),
        None if message_type == PONG.code() => Inbound::StrayPong,
        None => Inbound::Message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn outgoing_limits_in_both_generations() {
        for (g, header) in [(Generation::Gen3, 15usize), (Generation::Gen1, 22)] {
            assert_eq!(check_outgoing(g, header + 10, 200, 10), Ok(()));
            assert_eq!(
                check_outgoing(g, header + 10, 200, 11),
                Err(Error::FrameTooLarge {
                    len: header + 11,
                    limit: header + 10
                })
            );
            // The type check comes first.
            assert_eq!(
                check_outgoing(g, 0, 199, 1 << 20),
                Err(Error::ReservedTypeCode { code: 199 })
            );
            for t in system_types(g) {
                assert_eq!(check_outgoing(g, header, t.code(), 0), Ok(()));
            }
        }
        // No overflow on absurd lengths.
        assert_eq!(
            check_outgoing(Generation::Gen3, usize::MAX - 1, 200, usize::MAX),
            Err(Error::FrameTooLarge {
                len: usize::MAX,
                limit: usize::MAX - 1
            })
        );
    }

    #[test]
    fn the_waiter_is_consulted_only_for_possible_replies() {
        let g = Generation::Gen1;
        let mut asked = Vec::new();
        let mut take = |id: u32| -> Option<()> {
            asked.push(id);
            None
        };
        assert_eq!(classify(g, 0, 1, &mut take), Inbound::Ping);
        assert_eq!(classify(g, 42, 2, &mut take), Inbound::Reserved);
        assert_eq!(classify(g, 10, 3, &mut take), Inbound::Message); // Gen 1 HEARTBEAT
        assert_eq!(classify(g, 1, 4, &mut take), Inbound::StrayPong);
        assert_eq!(asked, [3, 4]);
        // A PONG with a waiter is its reply.
        assert_eq!(classify(g, 1, 5, |_| Some("ping")), Inbound::Reply("ping"));
    }

    proptest! {
        /// `classify` agrees with the definition for every code, id and waiter table.
        #[test]
        fn classify_matches_the_rules(
            gen1 in any::<bool>(),
            code in prop_oneof![0u16..=255, any::<u16>()],
            id in 0u32..8,
            waiting in proptest::collection::btree_set(0u32..8, 0..8),
        ) {
            let g = if gen1 { Generation::Gen1 } else { Generation::Gen3 };
            let got = classify(g, code, id, |i| waiting.contains(&i).then_some(i));
            let system = system_types(g).iter().any(|t| t.code() == code);
            let want = if code == PING.code() {
                Inbound::Ping
            } else if code < FIRST_USER_CODE && !system {
                Inbound::Reserved
            } else if waiting.contains(&id) {
                Inbound::Reply(id)
            } else if code == PONG.code() {
                Inbound::StrayPong
            } else {
                Inbound::Message
            };
            prop_assert_eq!(got, want);
            prop_assert_eq!(check_outgoing(g, usize::MAX, code, 0).is_ok(), code >= FIRST_USER_CODE || system);
        }
    }
}
