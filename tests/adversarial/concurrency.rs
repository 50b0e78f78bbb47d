pub async fn upserts_of_one_name() {}
pub async fn update_and_delete() {}
pub async fn first_writes_of_new_org() {}
pub async fn mixed_load() {}
