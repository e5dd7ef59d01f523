with orders as (
    select * from {{ ref('stg_orders') }}
),

payments as (
    select * from {{ ref('stg_payments') }}
),

paid as (
    select
        order_id,
        sum(case when payment_method = 'credit_card' then amount else 0 end) as credit_card_amount,
        sum(case when payment_method = 'paypal' then amount else 0 end) as paypal_amount,
        sum(case when payment_method = 'bank_transfer' then amount else 0 end) as bank_transfer_amount,
        sum(case when payment_method = 'gift_card' then amount else 0 end) as gift_card_amount,
        sum(amount) as total_paid
    from payments
    where status = 'success'
    group by order_id
),

failed as (
    select order_id, count(*) as failed_attempts
    from payments
    where status = 'failed'
    group by order_id
)

select
    orders.order_id,
    orders.customer_id,
    orders.order_date,
    orders.status,
    orders.shipping_amount,
    coalesce(paid.credit_card_amount, 0) as credit_card_amount,
    coalesce(paid.paypal_amount, 0) as paypal_amount,
    coalesce(paid.bank_transfer_amount, 0) as bank_transfer_amount,
    coalesce(paid.gift_card_amount, 0) as gift_card_amount,
    coalesce(paid.total_paid, 0) as total_paid,
    coalesce(failed.failed_attempts, 0) as failed_attempts
from orders
left join paid on paid.order_id = orders.order_id
left join failed on failed.order_id = orders.order_id
