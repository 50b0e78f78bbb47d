pub async fn stopped() {}
pub async fn unreachable() {}
pub async fn slow() {}
pub async fn transient() {}
pub async fn persistent() {}
pub async fn audit_refusing() {}
