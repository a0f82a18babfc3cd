//! The proxy's two legs in amqptrace's own recordings (`proxy --pcap`,
//! `run`): the interface names that mark them and the comment on a
//! broker-leg SYN that names the client it carries. The recorder
//! ([`crate::sink::PcapRecorder`]) writes them, the reader reads them back;
//! this file is the contract between the two.

use std::net::SocketAddr;

/// `if_name` of the interface that holds the client↔proxy leg in a recording
/// made by amqptrace's proxy (`proxy --pcap`, `run`).
pub const CLIENT_LEG_IF_NAME: &str = "amqptrace-client-leg";
/// `if_name` of the interface that holds the proxy↔broker leg.
pub const BROKER_LEG_IF_NAME: &str = "amqptrace-broker-leg";
/// The comment on a broker-leg SYN: this prefix, the client's address, " via ",
/// the proxy's address on the broker leg (e.g. `amqptrace: proxied for client
/// 127.0.0.1:44290 via 127.0.0.1:39012`).
pub const LEG_COMMENT_PREFIX: &str = "amqptrace: proxied for client ";

/// Which leg of a proxied connection a packet is on, in an amqptrace recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// Between the client and the proxy.
    Client,
    /// Between the proxy and the broker.
    Broker,
}

impl Leg {
    /// The leg an interface named `if_name` holds; `None` for any other interface.
    pub fn of_interface(if_name: &str) -> Option<Leg> {
        match if_name {
            CLIENT_LEG_IF_NAME => Some(Leg::Client),
            BROKER_LEG_IF_NAME => Some(Leg::Broker),
            _ => None,
        }
    }
}

/// On a broker-leg SYN: the proxy's own address `via` on that leg carries
/// the connection of `client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegAlias {
    pub client: SocketAddr,
    pub via: SocketAddr,
}

impl LegAlias {
    /// The comment that announces this alias (what the recorder writes).
    pub fn comment(&self) -> String {
        format!("{LEG_COMMENT_PREFIX}{} via {}", self.client, self.via)
    }

    /// Reads a comment written by [`LegAlias::comment`].
    pub fn parse(comment: &str) -> Option<LegAlias> {
        let rest = comment.strip_prefix(LEG_COMMENT_PREFIX)?;
        let (client, via) = rest.split_once(" via ")?;
        Some(LegAlias {
            client: client.trim().parse().ok()?,
            via: via.trim().parse().ok()?,
        })
    }
}
