//! The frontends: each speaks one proxy's protocol and translates it into
//! the internal model. ICAP (Squid) now; Envoy's ext_proc joins later.

pub mod icap;
