from django.db import migrations

from darktower.migration import SafeMigration

# The database side of a join (meetings.services.participants.meeting_join) in one statement, so that a join
# whose meeting already runs on a usable MC in the region costs one round trip and holds the meeting row's lock
# only for the database's own work.
#
# Locks the meeting row FOR NO KEY UPDATE (it does not block the participants' foreign-key checks; admissions
# and bans take the same lock), then reads in statements of their own: under READ COMMITTED each statement of a
# VOLATILE function takes a new snapshot, so a join that waited for the lock counts the seat (or reads the ban)
# that the transaction it waited for has just committed.
#
# The checks, in this order (the outcome names the first that fails; nothing is written then): the meeting exists
# (not_found), has not ended (ended); a guest (p_user_id NULL) only where require_auth is off
# (sign_in_required) and allow_guests on (no_guests). Then, for a new participant who is not the host: the
# principal is not banned (banned), the meeting is not locked (locked) and, unless the joiner waits in the waiting
# room (guests where the room is on; users too when it applies to them), a seat is left (full) and, for a guest, a
# guest seat (no_guest_seat). The host is refused only a seat in a full meeting. A signed-in user's open
# participant (the earliest) is given back as it is (a reload): no second row, no second seat.
#
# The active assignment in the region stands when its MC is healthy with a heartbeat younger than p_stale_seconds
# and the MC has accepted it (not pending). Otherwise the outcome is `assign`: nothing is written, the meeting row
# stays locked for the caller's transaction, and the caller makes the assignment (weighted draw, compare-and-set
# claim, asking the MC) with the meeting row, the open participant and the active assignment returned here.
# The meeting's assignments in the region are read apart (a MATERIALIZED CTE on the meeting_id index), with the
# active condition outside, so that the plan does not depend on when the table was last analyzed.
#
# When it stands: the participant is inserted (its display name the one given, else the user's, else "Guest"), a
# scheduled meeting starts, and the participant_joined (or participant_rejoined) audit row is written with the
# columns and metadata the Python path writes. Outcome joined or rejoined. joined_at and the audit row's created_at
# are the statement's time, not the transaction's: joins made in one transaction keep their order.
JOIN_FUNCTION = r"""
CREATE OR REPLACE FUNCTION meeting_join(
    p_meeting_id uuid, p_meeting_code text, p_region text, p_user_id uuid, p_principal text,
    p_display_name text, p_ip_address inet, p_user_agent text, p_client_version text,
    p_stale_seconds double precision,
    OUT outcome text, OUT joiner_role text, OUT is_new boolean, OUT m meetings, OUT p meeting_participants,
    OUT a_id bigint, OUT a_controller_id text, OUT a_grpc_endpoint text, OUT a_webtransport_endpoint text,
    OUT a_health_status text, OUT a_fresh boolean, OUT a_pending boolean, OUT a_media_handlers json
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    waits boolean;
    seats integer;
    guest_seats integer;
BEGIN
    IF p_meeting_id IS NOT NULL THEN
        SELECT * INTO m FROM meetings mt WHERE mt.meeting_id = p_meeting_id FOR NO KEY UPDATE;
    ELSE
        SELECT * INTO m FROM meetings mt WHERE mt.meeting_code = p_meeting_code FOR NO KEY UPDATE;
    END IF;
    IF NOT FOUND THEN
        outcome := 'not_found';
        RETURN;
    END IF;
    IF m.status = 'ended' THEN
        outcome := 'ended';
        RETURN;
    END IF;
    IF p_user_id IS NULL THEN
        IF m.require_auth THEN
            outcome := 'sign_in_required';
            RETURN;
        END IF;
        IF NOT m.allow_guests THEN
            outcome := 'no_guests';
            RETURN;
        END IF;
        joiner_role := 'guest';
    ELSIF m.created_by_user_id = p_user_id THEN
        joiner_role := 'host';
    ELSE
        joiner_role := 'participant';
    END IF;
    waits := m.waiting_room_enabled AND joiner_role <> 'host'
             AND (joiner_role = 'guest' OR m.waiting_room_applies_to_users);

    is_new := true;
    IF p_user_id IS NOT NULL THEN
        SELECT * INTO p FROM meeting_participants mp
        WHERE mp.meeting_id = m.meeting_id AND mp.left_at IS NULL AND mp.user_id = p_user_id
        ORDER BY mp.joined_at, mp.id LIMIT 1;
        is_new := NOT FOUND;
    END IF;
    IF is_new THEN
        -- Seats are what admitted, present participants hold (idx_participants_present).
        SELECT count(*) FILTER (WHERE mp.status = 'admitted'),
               count(*) FILTER (WHERE mp.status = 'admitted' AND mp.role = 'guest')
        INTO seats, guest_seats
        FROM meeting_participants mp WHERE mp.meeting_id = m.meeting_id AND mp.left_at IS NULL;
        IF joiner_role <> 'host' THEN
            IF EXISTS (SELECT 1 FROM meeting_bans b WHERE b.meeting_id = m.meeting_id AND b.principal = p_principal)
            THEN
                outcome := 'banned';
                RETURN;
            END IF;
            IF m.locked THEN
                outcome := 'locked';
                RETURN;
            END IF;
            IF NOT waits AND seats >= m.max_participants THEN
                outcome := 'full';
                RETURN;
            END IF;
            IF NOT waits AND joiner_role = 'guest' AND guest_seats >= m.max_guests THEN
                outcome := 'no_guest_seat';
                RETURN;
            END IF;
        ELSIF seats >= m.max_participants THEN
            outcome := 'full';
            RETURN;
        END IF;
    END IF;

    WITH a AS MATERIALIZED (
        SELECT ma.id, ma.meeting_controller_id, ma.pending_until, ma.media_handler_ids, ma.ended_at
        FROM meeting_assignments ma
        WHERE ma.meeting_id = m.meeting_id AND ma.region = p_region
    )
    SELECT a.id, a.meeting_controller_id, mc.grpc_endpoint, mc.webtransport_endpoint, mc.health_status,
           mc.last_heartbeat_at > now() - make_interval(secs => p_stale_seconds),
           a.pending_until IS NOT NULL,
           CASE WHEN a.media_handler_ids IS NULL THEN NULL ELSE (
               SELECT json_agg(json_build_array(h.handler_id, coalesce(h.webtransport_endpoint, ''),
                                                coalesce(h.grpc_endpoint, ''))
                               ORDER BY array_position(a.media_handler_ids, h.handler_id))
               FROM media_handlers h WHERE h.handler_id = ANY(a.media_handler_ids)) END
    INTO a_id, a_controller_id, a_grpc_endpoint, a_webtransport_endpoint, a_health_status, a_fresh, a_pending,
         a_media_handlers
    FROM a
    JOIN meeting_controllers mc ON mc.controller_id = a.meeting_controller_id
    WHERE a.ended_at IS NULL;
    IF NOT FOUND OR NOT a_fresh OR a_pending OR a_health_status <> 'healthy' THEN
        outcome := 'assign';
        RETURN;
    END IF;

    IF is_new THEN
        INSERT INTO meeting_participants
            (meeting_id, participant_id, user_id, display_name, role, status, joined_at, left_at, leave_reason,
             ip_address, user_agent, client_version, total_duration_seconds)
        VALUES (m.meeting_id, gen_random_uuid(), p_user_id,
                coalesce(nullif(p_display_name, ''),
                         (SELECT u.display_name FROM users u WHERE u.user_id = p_user_id), 'Guest'),
                joiner_role, CASE WHEN waits THEN 'waiting' ELSE 'admitted' END, statement_timestamp(), NULL, NULL,
                p_ip_address, p_user_agent, p_client_version, 0)
        RETURNING * INTO p;
    END IF;
    IF m.status = 'scheduled' THEN
        UPDATE meetings mt SET status = 'active', actual_start_time = statement_timestamp()
        WHERE mt.meeting_id = m.meeting_id
        RETURNING * INTO m;
    END IF;
    INSERT INTO audit_logs
        (event_type, actor_user_id, actor_type, target_type, target_id, action, result, error_message, ip_address,
         user_agent, metadata, created_at)
    VALUES (CASE WHEN is_new THEN 'participant_joined' ELSE 'participant_rejoined' END, p_user_id,
            CASE WHEN p_user_id IS NULL THEN 'api' ELSE 'user' END, 'meeting', m.meeting_id::text, 'join',
            'success', NULL, p_ip_address, p_user_agent,
            jsonb_build_object('participant_id', p.participant_id::text, 'role', p.role, 'status', p.status,
                               'controller_id', a_controller_id, 'region', p_region),
            statement_timestamp());
    outcome := CASE WHEN is_new THEN 'joined' ELSE 'rejoined' END;
END
$$;
COMMENT ON FUNCTION meeting_join(uuid, text, text, uuid, text, text, inet, text, text, double precision) IS
    'A join in one statement: lock, checks, seats, the active assignment reused, participant and audit row '
    '(meetings.services.participants.meeting_join; outcome assign: the caller places the meeting)';
"""

DROP_JOIN_FUNCTION = "DROP FUNCTION meeting_join(uuid, text, text, uuid, text, text, inet, text, text, double precision);"


class Migration(SafeMigration):

    dependencies = [
        ('meetings', '0007_verbose_names'),
    ]

    operations = [
        migrations.RunSQL(JOIN_FUNCTION, DROP_JOIN_FUNCTION),
    ]
