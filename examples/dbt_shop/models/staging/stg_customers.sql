select
    id as customer_id,
    first_name,
    last_name,
    lower(email) as email,
    upper(country_code) as country_code,
    created_at
from {{ source('raw', 'customers') }}
