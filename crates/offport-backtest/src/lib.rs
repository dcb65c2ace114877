//! offport's backtesting toolkit, pure and without Kafka:
//!
//! - [`sim`]: a fleet simulator producing raw proxy/VPN, EDR and MDM records in the formats the
//!   normalizers accept, with benign traffic built to tempt false positives, malicious
//!   behaviour planted at known times, and the ground truth;
//! - [`replay`]: the whole pipeline (normalize, join, score) in one process over such records,
//!   with the same core the Kafka services run;
//! - [`report`]: findings by analytic, evidence, app and severity, scored against the ground
//!   truth (precision, recall, missed and false cases), two baselines compared, as JSON and as
//!   a self-contained HTML page.
//!
//! Everything is deterministic: the same seed gives the same fleet, the same records and
//! baseline give the same findings.

pub mod order;
pub mod replay;
pub mod report;
pub mod sensors;
pub mod sim;
