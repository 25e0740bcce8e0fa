DROP TABLE subscriptions;
DROP DOMAIN log_position;
DROP DOMAIN subscription_name;
