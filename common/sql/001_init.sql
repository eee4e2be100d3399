-- placeholder, replaced by the real schema
select 1;
