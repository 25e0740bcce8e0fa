ALTER TABLE case_events
    ALTER COLUMN action TYPE text,
    ALTER COLUMN actor TYPE text,
    ALTER COLUMN changes TYPE jsonb,
    ALTER COLUMN comment TYPE text;
ALTER TABLE case_events
    ADD CONSTRAINT case_events_action_check CHECK (action IN (
        'CREATE', 'ADD_LINE', 'REMOVE_LINE', 'SUBMIT', 'ASSIGN_TO_ME', 'REQUEST_INFORMATION',
        'INFORMATION_RECEIVED', 'PROPOSE_SOLUTION', 'CLOSE', 'CANCEL', 'SET_LINE_STATE')),
    ADD CONSTRAINT case_events_actor_check CHECK (char_length(actor) BETWEEN 1 AND 255),
    ADD CONSTRAINT case_events_changes_check
        CHECK (jsonb_typeof(changes) = 'array' AND jsonb_array_length(changes) >= 1),
    ADD CONSTRAINT case_events_comment_check CHECK (char_length(comment) <= 4000);

ALTER TABLE case_lines DROP CONSTRAINT line_is_consistent;
ALTER TABLE case_lines
    ALTER COLUMN position TYPE integer,
    ALTER COLUMN number TYPE text,
    ALTER COLUMN state TYPE text,
    ALTER COLUMN dispute_code TYPE text,
    ALTER COLUMN invoice_line_ref TYPE text,
    ALTER COLUMN invoice_number TYPE text,
    ALTER COLUMN short_description TYPE text,
    ALTER COLUMN invoiced_amount TYPE numeric,
    ALTER COLUMN disputed_amount TYPE numeric,
    ALTER COLUMN approved_amount TYPE numeric,
    ALTER COLUMN invoiced_quantity TYPE numeric,
    ALTER COLUMN disputed_quantity TYPE numeric,
    ALTER COLUMN resolution_code TYPE text,
    ALTER COLUMN resolution_notes TYPE text;
ALTER TABLE case_lines
    ADD CONSTRAINT case_lines_position_check CHECK (position >= 1),
    ADD CONSTRAINT case_lines_number_check CHECK (number ~ '^INVCSL[0-9]{7,}$'),
    ADD CONSTRAINT case_lines_state_check CHECK (state IN (
        'DRAFT', 'NEW', 'WORK_IN_PROGRESS', 'AWAITING_INFO', 'RESOLVED_ACCEPTED',
        'RESOLVED_DENIED', 'CANCELED')),
    ADD CONSTRAINT case_lines_dispute_code_check CHECK (dispute_code IN (
        'INCORRECT_PRODUCT_OR_SERVICE', 'PRICING_DISCREPANCY', 'INCORRECT_QUANTITY',
        'INCORRECT_CUSTOMER_DETAILS', 'OTHER')),
    ADD CONSTRAINT case_lines_invoice_line_ref_check
        CHECK (char_length(invoice_line_ref) BETWEEN 1 AND 64),
    ADD CONSTRAINT case_lines_invoice_number_check
        CHECK (char_length(invoice_number) BETWEEN 1 AND 64),
    ADD CONSTRAINT case_lines_short_description_check
        CHECK (char_length(short_description) BETWEEN 1 AND 160),
    ADD CONSTRAINT case_lines_invoiced_amount_check CHECK (invoiced_amount >= 0
        AND scale(invoiced_amount) <= 4 AND invoiced_amount < 1e15),
    ADD CONSTRAINT case_lines_check CHECK (disputed_amount >= 0
        AND scale(disputed_amount) <= 4 AND disputed_amount <= invoiced_amount),
    ADD CONSTRAINT case_lines_check1 CHECK (approved_amount >= 0
        AND scale(approved_amount) <= 4 AND approved_amount <= disputed_amount),
    ADD CONSTRAINT case_lines_invoiced_quantity_check CHECK (invoiced_quantity >= 0
        AND scale(invoiced_quantity) <= 4 AND invoiced_quantity < 1e15),
    ADD CONSTRAINT case_lines_disputed_quantity_check CHECK (disputed_quantity >= 0
        AND scale(disputed_quantity) <= 4 AND disputed_quantity < 1e15),
    ADD CONSTRAINT case_lines_resolution_code_check CHECK (resolution_code IN (
        'SOLVED_CREDIT', 'SOLVED_WRITE_OFF', 'SOLVED_SETTLEMENT', 'SOLVED_INVALID_DISPUTE')),
    ADD CONSTRAINT case_lines_resolution_notes_check CHECK (char_length(resolution_notes) <= 4000),
    ADD CONSTRAINT resolved_lines_have_an_approved_amount
        CHECK ((state IN ('RESOLVED_ACCEPTED', 'RESOLVED_DENIED')) = (approved_amount IS NOT NULL));

ALTER TABLE invoice_cases DROP CONSTRAINT case_is_consistent;
ALTER TABLE invoice_cases
    ALTER COLUMN number TYPE text,
    ALTER COLUMN state TYPE text,
    ALTER COLUMN account_id TYPE text,
    ALTER COLUMN contact_id TYPE text,
    ALTER COLUMN invoice_number TYPE text,
    ALTER COLUMN request_source TYPE text,
    ALTER COLUMN short_description TYPE text,
    ALTER COLUMN description TYPE text,
    ALTER COLUMN priority TYPE smallint,
    ALTER COLUMN currency_code TYPE text,
    ALTER COLUMN assigned_to TYPE text,
    ALTER COLUMN opened_by TYPE text,
    ALTER COLUMN resolution_code TYPE text,
    ALTER COLUMN resolution_notes TYPE text,
    ALTER COLUMN revision TYPE bigint;
ALTER TABLE invoice_cases
    ADD CONSTRAINT invoice_cases_number_check CHECK (number ~ '^INVCS[0-9]{7,}$'),
    ADD CONSTRAINT invoice_cases_state_check CHECK (state IN (
        'DRAFT', 'NEW', 'WORK_IN_PROGRESS', 'AWAITING_INFO', 'RESOLVED', 'CLOSED', 'CANCELED')),
    ADD CONSTRAINT invoice_cases_account_id_check CHECK (char_length(account_id) BETWEEN 1 AND 64),
    ADD CONSTRAINT invoice_cases_contact_id_check CHECK (char_length(contact_id) BETWEEN 1 AND 64),
    ADD CONSTRAINT invoice_cases_invoice_number_check
        CHECK (char_length(invoice_number) BETWEEN 1 AND 64),
    ADD CONSTRAINT invoice_cases_request_source_check
        CHECK (request_source IN ('SINGLE_INVOICE', 'MULTIPLE_INVOICES')),
    ADD CONSTRAINT invoice_cases_short_description_check
        CHECK (char_length(short_description) BETWEEN 1 AND 160),
    ADD CONSTRAINT invoice_cases_description_check CHECK (char_length(description) <= 4000),
    ADD CONSTRAINT invoice_cases_priority_check CHECK (priority BETWEEN 1 AND 4),
    ADD CONSTRAINT invoice_cases_currency_code_check CHECK (currency_code ~ '^[A-Z]{3}$'),
    ADD CONSTRAINT invoice_cases_assigned_to_check CHECK (char_length(assigned_to) BETWEEN 1 AND 255),
    ADD CONSTRAINT invoice_cases_opened_by_check CHECK (char_length(opened_by) BETWEEN 1 AND 255),
    ADD CONSTRAINT invoice_cases_resolution_code_check CHECK (resolution_code IN (
        'SOLVED_CREDIT', 'SOLVED_WRITE_OFF', 'SOLVED_SETTLEMENT', 'SOLVED_INVALID_DISPUTE')),
    ADD CONSTRAINT invoice_cases_resolution_notes_check
        CHECK (char_length(resolution_notes) <= 4000),
    ADD CONSTRAINT invoice_cases_revision_check CHECK (revision >= 1),
    ADD CONSTRAINT single_invoice_names_its_invoice
        CHECK (request_source <> 'SINGLE_INVOICE' OR invoice_number IS NOT NULL),
    ADD CONSTRAINT assigned_after_new
        CHECK ((state IN ('WORK_IN_PROGRESS', 'AWAITING_INFO', 'RESOLVED', 'CLOSED'))
               = (assigned_to IS NOT NULL)),
    ADD CONSTRAINT submitted_after_draft
        CHECK (state IN ('DRAFT', 'CANCELED') OR submit_time IS NOT NULL),
    ADD CONSTRAINT resolved_has_resolve_time
        CHECK (state NOT IN ('RESOLVED', 'CLOSED') OR resolve_time IS NOT NULL),
    ADD CONSTRAINT closed_has_close_time
        CHECK (state <> 'CLOSED' OR close_time IS NOT NULL);

DROP DOMAIN state_changes, amount, line_position, revision, priority_level, currency_code,
    long_text, short_text, actor, identifier, line_number, case_number, event_action,
    resolution_code, dispute_code, request_source, line_state, case_state;
