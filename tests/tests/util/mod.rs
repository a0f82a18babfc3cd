//! What the integration tests share: the built binary run to its end
//! ([`bin`]), running proxies and captures ([`live`], [`process`]), the
//! shared broker and lapin ([`broker`]), a private RabbitMQ node with an
//! optional TLS listener ([`private_broker`]), paths and a temporary folder per
//! test ([`files`]), tshark and the other external tools ([`tshark`]),
//! captures as bytes ([`pcap`]), queries on analysis documents
//! ([`analysis`]), and assertions that print a diff ([`diff`]).

pub mod analysis;
pub mod bin;
pub mod broker;
pub mod diff;
pub mod files;
pub mod live;
pub mod pcap;
pub mod private_broker;
pub mod process;
pub mod tshark;

pub use analysis::*;
pub use bin::*;
pub use broker::*;
pub use diff::*;
pub use files::*;
pub use live::*;
pub use pcap::*;
pub use private_broker::*;
pub use process::*;
pub use tshark::*;
