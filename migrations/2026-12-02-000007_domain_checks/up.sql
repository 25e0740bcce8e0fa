-- Single-column rules as domains instead of table CHECK constraints.
--
-- PostgreSQL reads and plans every CHECK constraint of a table again in
-- every statement that writes to it (and evaluates all of them for every
-- row it writes, whichever columns changed): with some forty of them, that
-- was a quarter of the database's work for an action. A domain's rule is
-- prepared once per session and checked only where a value is assigned to
-- a column of that domain. The rules are the same; the ones that relate
-- two columns stay table constraints.
CREATE DOMAIN case_state AS text CHECK (VALUE IN (
    'DRAFT', 'NEW', 'WORK_IN_PROGRESS', 'AWAITING_INFO', 'RESOLVED', 'CLOSED', 'CANCELED'));
CREATE DOMAIN line_state AS text CHECK (VALUE IN (
    'DRAFT', 'NEW', 'WORK_IN_PROGRESS', 'AWAITING_INFO', 'RESOLVED_ACCEPTED', 'RESOLVED_DENIED',
    'CANCELED'));
CREATE DOMAIN request_source AS text CHECK (VALUE IN ('SINGLE_INVOICE', 'MULTIPLE_INVOICES'));
CREATE DOMAIN dispute_code AS text CHECK (VALUE IN (
    'INCORRECT_PRODUCT_OR_SERVICE', 'PRICING_DISCREPANCY', 'INCORRECT_QUANTITY',
    'INCORRECT_CUSTOMER_DETAILS', 'OTHER'));
CREATE DOMAIN resolution_code AS text CHECK (VALUE IN (
    'SOLVED_CREDIT', 'SOLVED_WRITE_OFF', 'SOLVED_SETTLEMENT', 'SOLVED_INVALID_DISPUTE'));
CREATE DOMAIN event_action AS text CHECK (VALUE IN (
    'CREATE', 'ADD_LINE', 'REMOVE_LINE', 'SUBMIT', 'ASSIGN_TO_ME', 'REQUEST_INFORMATION',
    'INFORMATION_RECEIVED', 'PROPOSE_SOLUTION', 'CLOSE', 'CANCEL', 'SET_LINE_STATE'));
CREATE DOMAIN case_number AS text CHECK (VALUE ~ '^INVCS[0-9]{7,}$');
CREATE DOMAIN line_number AS text CHECK (VALUE ~ '^INVCSL[0-9]{7,}$');
CREATE DOMAIN identifier AS text CHECK (char_length(VALUE) BETWEEN 1 AND 64);
CREATE DOMAIN actor AS text CHECK (char_length(VALUE) BETWEEN 1 AND 255);
CREATE DOMAIN short_text AS text CHECK (char_length(VALUE) BETWEEN 1 AND 160);
CREATE DOMAIN long_text AS text CHECK (char_length(VALUE) <= 4000);
CREATE DOMAIN currency_code AS text CHECK (VALUE ~ '^[A-Z]{3}$');
CREATE DOMAIN priority_level AS smallint CHECK (VALUE BETWEEN 1 AND 4);
CREATE DOMAIN revision AS bigint CHECK (VALUE >= 1);
CREATE DOMAIN line_position AS integer CHECK (VALUE >= 1);
-- Exact decimals, kept in the scale they were given (at most 4 places).
CREATE DOMAIN amount AS numeric
    CHECK (VALUE >= 0 AND scale(VALUE) <= 4 AND VALUE < 1e15);
CREATE DOMAIN state_changes AS jsonb
    CHECK (jsonb_typeof(VALUE) = 'array' AND jsonb_array_length(VALUE) >= 1);

ALTER TABLE invoice_cases
    DROP CONSTRAINT invoice_cases_account_id_check,
    DROP CONSTRAINT invoice_cases_assigned_to_check,
    DROP CONSTRAINT invoice_cases_contact_id_check,
    DROP CONSTRAINT invoice_cases_currency_code_check,
    DROP CONSTRAINT invoice_cases_description_check,
    DROP CONSTRAINT invoice_cases_invoice_number_check,
    DROP CONSTRAINT invoice_cases_number_check,
    DROP CONSTRAINT invoice_cases_opened_by_check,
    DROP CONSTRAINT invoice_cases_priority_check,
    DROP CONSTRAINT invoice_cases_request_source_check,
    DROP CONSTRAINT invoice_cases_resolution_code_check,
    DROP CONSTRAINT invoice_cases_resolution_notes_check,
    DROP CONSTRAINT invoice_cases_revision_check,
    DROP CONSTRAINT invoice_cases_short_description_check,
    DROP CONSTRAINT invoice_cases_state_check,
    DROP CONSTRAINT assigned_after_new,
    DROP CONSTRAINT closed_has_close_time,
    DROP CONSTRAINT resolved_has_resolve_time,
    DROP CONSTRAINT single_invoice_names_its_invoice,
    DROP CONSTRAINT submitted_after_draft;
ALTER TABLE invoice_cases
    ALTER COLUMN number TYPE case_number,
    ALTER COLUMN state TYPE case_state,
    ALTER COLUMN account_id TYPE identifier,
    ALTER COLUMN contact_id TYPE identifier,
    ALTER COLUMN invoice_number TYPE identifier,
    ALTER COLUMN request_source TYPE request_source,
    ALTER COLUMN short_description TYPE short_text,
    ALTER COLUMN description TYPE long_text,
    ALTER COLUMN priority TYPE priority_level,
    ALTER COLUMN currency_code TYPE currency_code,
    ALTER COLUMN assigned_to TYPE actor,
    ALTER COLUMN opened_by TYPE actor,
    ALTER COLUMN resolution_code TYPE resolution_code,
    ALTER COLUMN resolution_notes TYPE long_text,
    ALTER COLUMN revision TYPE revision;
-- What relates the columns of a case (one constraint: PostgreSQL reads
-- each constraint of a table again for every statement that writes it).
ALTER TABLE invoice_cases ADD CONSTRAINT case_is_consistent CHECK (
    -- a single-invoice case names its invoice
    (request_source <> 'SINGLE_INVOICE' OR invoice_number IS NOT NULL)
    -- assigned exactly in the states after NEW but CANCELED
    AND ((state IN ('WORK_IN_PROGRESS', 'AWAITING_INFO', 'RESOLVED', 'CLOSED'))
         = (assigned_to IS NOT NULL))
    -- submitted after DRAFT, resolved in RESOLVED and CLOSED, closed in CLOSED
    AND (state IN ('DRAFT', 'CANCELED') OR submit_time IS NOT NULL)
    AND (state NOT IN ('RESOLVED', 'CLOSED') OR resolve_time IS NOT NULL)
    AND (state <> 'CLOSED' OR close_time IS NOT NULL));

ALTER TABLE case_lines
    DROP CONSTRAINT case_lines_check,
    DROP CONSTRAINT case_lines_check1,
    DROP CONSTRAINT case_lines_dispute_code_check,
    DROP CONSTRAINT case_lines_disputed_quantity_check,
    DROP CONSTRAINT case_lines_invoice_line_ref_check,
    DROP CONSTRAINT case_lines_invoice_number_check,
    DROP CONSTRAINT case_lines_invoiced_amount_check,
    DROP CONSTRAINT case_lines_invoiced_quantity_check,
    DROP CONSTRAINT case_lines_number_check,
    DROP CONSTRAINT case_lines_position_check,
    DROP CONSTRAINT case_lines_resolution_code_check,
    DROP CONSTRAINT case_lines_resolution_notes_check,
    DROP CONSTRAINT case_lines_short_description_check,
    DROP CONSTRAINT case_lines_state_check,
    DROP CONSTRAINT resolved_lines_have_an_approved_amount;
ALTER TABLE case_lines
    ALTER COLUMN position TYPE line_position,
    ALTER COLUMN number TYPE line_number,
    ALTER COLUMN state TYPE line_state,
    ALTER COLUMN dispute_code TYPE dispute_code,
    ALTER COLUMN invoice_line_ref TYPE identifier,
    ALTER COLUMN invoice_number TYPE identifier,
    ALTER COLUMN short_description TYPE short_text,
    ALTER COLUMN invoiced_amount TYPE amount,
    ALTER COLUMN disputed_amount TYPE amount,
    ALTER COLUMN approved_amount TYPE amount,
    ALTER COLUMN invoiced_quantity TYPE amount,
    ALTER COLUMN disputed_quantity TYPE amount,
    ALTER COLUMN resolution_code TYPE resolution_code,
    ALTER COLUMN resolution_notes TYPE long_text;
ALTER TABLE case_lines ADD CONSTRAINT line_is_consistent CHECK (
    disputed_amount <= invoiced_amount
    AND approved_amount <= disputed_amount
    -- a resolved line, and only a resolved line, has an approved amount
    AND ((state IN ('RESOLVED_ACCEPTED', 'RESOLVED_DENIED')) = (approved_amount IS NOT NULL)));

ALTER TABLE case_events
    DROP CONSTRAINT case_events_action_check,
    DROP CONSTRAINT case_events_actor_check,
    DROP CONSTRAINT case_events_changes_check,
    DROP CONSTRAINT case_events_comment_check;
ALTER TABLE case_events
    ALTER COLUMN action TYPE event_action,
    ALTER COLUMN actor TYPE actor,
    ALTER COLUMN changes TYPE state_changes,
    ALTER COLUMN comment TYPE long_text;
