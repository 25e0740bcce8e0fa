-- Invoice cases and their lines. Every rule that one row can carry is a
-- constraint here; the rules across a case and its lines (SPEC §3.5) are the
-- domain module's, applied under the case's row lock.
CREATE TABLE invoice_cases (
    id                uuid PRIMARY KEY,
    number            text NOT NULL UNIQUE CHECK (number ~ '^INVCS[0-9]{7,}$'),
    state             text NOT NULL CHECK (state IN (
                          'DRAFT', 'NEW', 'WORK_IN_PROGRESS', 'AWAITING_INFO',
                          'RESOLVED', 'CLOSED', 'CANCELED')),
    account_id        text NOT NULL CHECK (char_length(account_id) BETWEEN 1 AND 64),
    contact_id        text CHECK (char_length(contact_id) BETWEEN 1 AND 64),
    invoice_number    text CHECK (char_length(invoice_number) BETWEEN 1 AND 64),
    request_source    text NOT NULL CHECK (request_source IN ('SINGLE_INVOICE', 'MULTIPLE_INVOICES')),
    short_description text NOT NULL CHECK (char_length(short_description) BETWEEN 1 AND 160),
    description       text CHECK (char_length(description) <= 4000),
    priority          smallint NOT NULL DEFAULT 4 CHECK (priority BETWEEN 1 AND 4),
    currency_code     text NOT NULL CHECK (currency_code ~ '^[A-Z]{3}$'),
    assigned_to       text CHECK (char_length(assigned_to) BETWEEN 1 AND 255),
    opened_by         text NOT NULL CHECK (char_length(opened_by) BETWEEN 1 AND 255),
    resolution_code   text CHECK (resolution_code IN (
                          'SOLVED_CREDIT', 'SOLVED_WRITE_OFF', 'SOLVED_SETTLEMENT',
                          'SOLVED_INVALID_DISPUTE')),
    resolution_notes  text CHECK (char_length(resolution_notes) <= 4000),
    create_time       timestamptz NOT NULL,
    update_time       timestamptz NOT NULL,
    submit_time       timestamptz,
    resolve_time      timestamptz,
    close_time        timestamptz,
    -- Incremented by every change of the case or its lines: the etag.
    revision          bigint NOT NULL CHECK (revision >= 1),

    CONSTRAINT single_invoice_names_its_invoice
        CHECK (request_source <> 'SINGLE_INVOICE' OR invoice_number IS NOT NULL),
    CONSTRAINT assigned_after_new
        CHECK ((state IN ('WORK_IN_PROGRESS', 'AWAITING_INFO', 'RESOLVED', 'CLOSED'))
               = (assigned_to IS NOT NULL)),
    CONSTRAINT submitted_after_draft
        CHECK (state IN ('DRAFT', 'CANCELED') OR submit_time IS NOT NULL),
    CONSTRAINT resolved_has_resolve_time
        CHECK (state NOT IN ('RESOLVED', 'CLOSED') OR resolve_time IS NOT NULL),
    CONSTRAINT closed_has_close_time
        CHECK (state <> 'CLOSED' OR close_time IS NOT NULL)
);

-- ListInvoiceCases: newest first, filtered by account, state, assignee.
CREATE INDEX invoice_cases_create_time_idx ON invoice_cases (create_time DESC, id DESC);
CREATE INDEX invoice_cases_account_idx ON invoice_cases (account_id, create_time DESC, id DESC);
CREATE INDEX invoice_cases_state_idx ON invoice_cases (state, create_time DESC, id DESC);
CREATE INDEX invoice_cases_assigned_to_idx ON invoice_cases (assigned_to, create_time DESC, id DESC)
    WHERE assigned_to IS NOT NULL;

CREATE TABLE case_lines (
    id                uuid PRIMARY KEY,
    case_id           uuid NOT NULL REFERENCES invoice_cases (id),
    position          integer NOT NULL CHECK (position >= 1),
    number            text NOT NULL UNIQUE CHECK (number ~ '^INVCSL[0-9]{7,}$'),
    state             text NOT NULL CHECK (state IN (
                          'DRAFT', 'NEW', 'WORK_IN_PROGRESS', 'AWAITING_INFO',
                          'RESOLVED_ACCEPTED', 'RESOLVED_DENIED', 'CANCELED')),
    dispute_code      text NOT NULL CHECK (dispute_code IN (
                          'INCORRECT_PRODUCT_OR_SERVICE', 'PRICING_DISCREPANCY',
                          'INCORRECT_QUANTITY', 'INCORRECT_CUSTOMER_DETAILS', 'OTHER')),
    invoice_line_ref  text CHECK (char_length(invoice_line_ref) BETWEEN 1 AND 64),
    invoice_number    text CHECK (char_length(invoice_number) BETWEEN 1 AND 64),
    short_description text NOT NULL CHECK (char_length(short_description) BETWEEN 1 AND 160),
    -- Exact decimals, kept in the scale they were given (at most 4 places).
    invoiced_amount   numeric NOT NULL CHECK (invoiced_amount >= 0 AND scale(invoiced_amount) <= 4
                                              AND invoiced_amount < 1e15),
    disputed_amount   numeric NOT NULL CHECK (disputed_amount >= 0 AND scale(disputed_amount) <= 4
                                              AND disputed_amount <= invoiced_amount),
    approved_amount   numeric CHECK (approved_amount >= 0 AND scale(approved_amount) <= 4
                                     AND approved_amount <= disputed_amount),
    invoiced_quantity numeric CHECK (invoiced_quantity >= 0 AND scale(invoiced_quantity) <= 4
                                     AND invoiced_quantity < 1e15),
    disputed_quantity numeric CHECK (disputed_quantity >= 0 AND scale(disputed_quantity) <= 4
                                     AND disputed_quantity < 1e15),
    resolution_code   text CHECK (resolution_code IN (
                          'SOLVED_CREDIT', 'SOLVED_WRITE_OFF', 'SOLVED_SETTLEMENT',
                          'SOLVED_INVALID_DISPUTE')),
    resolution_notes  text CHECK (char_length(resolution_notes) <= 4000),
    create_time       timestamptz NOT NULL,
    update_time       timestamptz NOT NULL,

    CONSTRAINT line_position_unique UNIQUE (case_id, position),
    CONSTRAINT resolved_lines_have_an_approved_amount
        CHECK ((state IN ('RESOLVED_ACCEPTED', 'RESOLVED_DENIED')) = (approved_amount IS NOT NULL))
);
