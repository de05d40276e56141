//! Message types: codes, names, the reserved ranges and Python's auto-allocation rule.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::Error;

/// First code available to user types (`0..=199` are reserved for the protocol).
pub const FIRST_USER_CODE: u16 = 200;
/// Last code Python's auto-allocation hands out (`10000..=65535` are explicit-only "plugin" codes).
pub const LAST_AUTO_CODE: u16 = 9999;

/// A message type: a 16-bit code that travels on the wire and a name that never does.
///
/// Equality and hashing use the code only.
///
/// ```
/// use veltix_proto::MessageType;
/// const CHAT: MessageType = MessageType::new(200, "chat");
/// assert_eq!(CHAT.code(), 200);
/// assert!(MessageType::user(150, "nope").is_err()); // reserved range
/// assert_eq!(MessageType::user(201, "move").unwrap().name(), "move");
/// ```
#[derive(Clone, Debug)]
pub struct MessageType {
    code: u16,
    name: Cow<'static, str>,
}

impl MessageType {
    /// A type with any code, usable in `const`/`static` items. No range check: prefer
    /// [`MessageType::user`] for codes that come from configuration.
    pub const fn new(code: u16, name: &'static str) -> Self {
        MessageType {
            code,
            name: Cow::Borrowed(name),
        }
    }

    /// A user type: the code must be in `200..=65535`.
    pub fn user(code: u16, name: impl Into<Cow<'static, str>>) -> Result<Self, Error> {
        if code < FIRST_USER_CODE {
            return Err(Error::ReservedTypeCode { code });
        }
        Ok(MessageType {
            code,
            name: name.into(),
        })
    }

    /// A type named after its code the way Python does (`type_{code}`), without range checks.
    pub fn from_code(code: u16) -> Self {
        MessageType {
            code,
            name: Cow::Owned(format!("type_{code}")),
        }
    }

    /// The wire code.
    pub const fn code(&self) -> u16 {
        self.code
    }

    /// The local name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True for codes `0..=199`.
    pub const fn is_reserved(&self) -> bool {
        self.code < FIRST_USER_CODE
    }
}

impl PartialEq for MessageType {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code
    }
}
impl Eq for MessageType {}
impl std::hash::Hash for MessageType {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.code.hash(state);
    }
}
impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.name, self.code)
    }
}
impl From<&MessageType> for u16 {
    fn from(t: &MessageType) -> u16 {
        t.code
    }
}

/// PING (code 0): answered automatically with a PONG carrying the same request id.
pub const PING: MessageType = MessageType::new(0, "ping");
/// PONG (code 1).
pub const PONG: MessageType = MessageType::new(1, "pong");
/// Gen 1 only: HEARTBEAT (code 2), registered but never sent by Python.
pub const HEARTBEAT: MessageType = MessageType::new(2, "heartbeat");
/// Gen 1 only: HELLO (code 10), the server's handshake frame.
pub const HELLO: MessageType = MessageType::new(10, "hello");
/// Gen 1 only: HELLO_ACK (code 11), the client's handshake answer.
pub const HELLO_ACK: MessageType = MessageType::new(11, "hello_ack");
/// Gen 1 only: ERROR (code 20), registered but never sent.
pub const ERROR: MessageType = MessageType::new(20, "error");
/// Gen 1 only: INVALID_REQUEST (code 21), registered but never sent.
pub const INVALID_REQUEST: MessageType = MessageType::new(21, "invalid_request");

/// The system types a generation registers at start-up.
///
/// ```
/// use veltix_proto::{system_types, Generation};
/// assert_eq!(system_types(Generation::Gen3).len(), 2);
/// assert_eq!(system_types(Generation::Gen1).len(), 7);
/// ```
pub fn system_types(generation: crate::Generation) -> &'static [MessageType] {
    static GEN3: [MessageType; 2] = [PING, PONG];
    static GEN1: [MessageType; 7] = [
        PING,
        PONG,
        HEARTBEAT,
        HELLO,
        HELLO_ACK,
        ERROR,
        INVALID_REQUEST,
    ];
    match generation {
        crate::Generation::Gen3 => &GEN3,
        crate::Generation::Gen1 => &GEN1,
    }
}

/// A set of type codes (a 65536-bit bitmap, 8 KiB), cheap to query on the hot path.
///
/// ```
/// use veltix_proto::TypeSet;
/// let set: TypeSet = [0u16, 1, 200].into_iter().collect();
/// assert!(set.contains(200) && !set.contains(201));
/// ```
#[derive(Clone)]
pub struct TypeSet {
    bits: Box<[u64; 1024]>,
}

impl TypeSet {
    /// The empty set.
    pub fn new() -> Self {
        TypeSet {
            bits: Box::new([0; 1024]),
        }
    }
    /// Adds a code; returns false if it was already there.
    pub fn insert(&mut self, code: u16) -> bool {
        let (w, b) = (usize::from(code) / 64, code % 64);
        let had = self.bits[w] & (1 << b) != 0;
        self.bits[w] |= 1 << b;
        !had
    }
    /// Removes a code; returns true if it was there.
    pub fn remove(&mut self, code: u16) -> bool {
        let (w, b) = (usize::from(code) / 64, code % 64);
        let had = self.bits[w] & (1 << b) != 0;
        self.bits[w] &= !(1 << b);
        had
    }
    /// Membership test.
    pub fn contains(&self, code: u16) -> bool {
        self.bits[usize::from(code) / 64] & (1 << (code % 64)) != 0
    }
}

impl Default for TypeSet {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for TypeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let codes: Vec<u16> = (0..=u16::MAX).filter(|c| self.contains(*c)).collect();
        f.debug_set().entries(codes).finish()
    }
}

impl FromIterator<u16> for TypeSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        let mut s = TypeSet::new();
        for c in iter {
            s.insert(c);
        }
        s
    }
}

/// A registry of message types that reproduces Python Veltix's rules, for programs that must
/// agree on codes with Python peers that call `MessageType("name")`.
///
/// Python gives an auto-allocated type the **lowest code in 200..=9999 not yet registered in the
/// process** at the moment it is created; to get the same codes, register the same types in the
/// same order as the Python program does.
///
/// ```
/// use veltix_proto::{Generation, MessageType, TypeRegistry};
/// let mut reg = TypeRegistry::new(Generation::Gen3);
/// for code in [200, 201, 202] {
///     reg.register(MessageType::user(code, format!("t{code}")).unwrap()).unwrap();
/// }
/// assert_eq!(reg.auto("auto_chat").unwrap().code(), 203);
/// assert!(reg.register(MessageType::new(200, "dup")).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct TypeRegistry {
    types: BTreeMap<u16, MessageType>,
    set: TypeSet,
}

impl TypeRegistry {
    /// A registry holding the system types of `generation`.
    pub fn new(generation: crate::Generation) -> Self {
        let mut reg = TypeRegistry {
            types: BTreeMap::new(),
            set: TypeSet::new(),
        };
        for t in system_types(generation) {
            reg.types.insert(t.code(), t.clone());
            reg.set.insert(t.code());
        }
        reg
    }

    /// Registers a type; a code registered twice is an error.
    pub fn register(&mut self, t: MessageType) -> Result<MessageType, Error> {
        if let Some(existing) = self.types.get(&t.code()) {
            return Err(Error::DuplicateTypeCode {
                code: t.code(),
                existing: existing.name().to_string(),
            });
        }
        self.set.insert(t.code());
        self.types.insert(t.code(), t.clone());
        Ok(t)
    }

    /// Python's `MessageType("name")`: the lowest free code in `200..=9999`.
    pub fn auto(&mut self, name: impl Into<Cow<'static, str>>) -> Result<MessageType, Error> {
        let code = (FIRST_USER_CODE..=LAST_AUTO_CODE)
            .find(|c| !self.set.contains(*c))
            .ok_or(Error::TypeCodesExhausted)?;
        self.register(MessageType {
            code,
            name: name.into(),
        })
    }

    /// Looks a code up.
    pub fn get(&self, code: u16) -> Option<&MessageType> {
        self.types.get(&code)
    }

    /// All registered types, by code.
    pub fn iter(&self) -> impl Iterator<Item = &MessageType> {
        self.types.values()
    }

    /// The registered codes as a set (for [`DecoderConfig::known_types`](crate::DecoderConfig)).
    pub fn codes(&self) -> &TypeSet {
        &self.set
    }
}
