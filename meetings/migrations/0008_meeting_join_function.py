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
# and the MC has accepted it (not pending). The meeting's assignments in the region are read apart (a MATERIALIZED
# CTE on the meeting_id index), with the active condition outside, so that the plan does not depend on when the
# table was last analyzed.
#
# When it does not stand and the MC must be asked (p_place false: MC_ASSIGN_CALLS), the outcome is `assign`:
# nothing is written, the meeting row stays locked for the caller's transaction, and the caller places the meeting
# with the meeting row, the open participant and the active assignment returned here. Otherwise the function
# assigns an MC by meetings.services.assignment's rules (its module docstring): up to p_candidates least-loaded
# candidates with room (healthy ones when any; meeting_join_candidates), drawn at random with weight
# 1 - min(load ratio, 0.99); a degraded MC that runs the meeting keeps it when no healthy one exists
# (degraded_fallback); no candidate: outcome no_capacity, nothing written. A reassignment locks the old MC's row
# and the candidates' in controller_id order (the heartbeat flush's order) before ending the old assignment and
# giving back what it held; the new assignment is inserted (ON CONFLICT DO NOTHING: a concurrent assignment that
# inserted first is answered, as reused), and an MC's slot claimed by compare-and-set, falling back along the draw
# and then to p_fresh_reads fresh reads; when every claim failed the function raises SQLSTATE DTNC0 (its message the
# rule of the first choice), so that the statement's writes roll back. Then the meeting points at its MC (and
# starts), and the meeting_assigned outbox event and audit row are written.
#
# When an MC runs the meeting: the participant is inserted (its display name the one given, else the user's, else
# "Guest"), a scheduled meeting starts, and the participant_joined (or participant_rejoined) audit row is written
# with the columns and metadata the Python path writes (after the meeting_assigned row). Outcome joined or
# rejoined. joined_at and the audit rows' created_at are the statement's time, not the transaction's: joins made
# in one transaction keep their order.


# The candidates of a placement in the order to try them: the first p_limit by "healthy first, then the effective
# load ratio, ties to the newest heartbeat" (the partial index idx_meeting_controllers_available serves the
# region's placeable rows), only the healthy ones when any, then ordered by an exponential race with rate
# 1 - min(load ratio, 0.99): the same order as repeated weighted draws without replacement.
CANDIDATES_FUNCTION = r"""
CREATE OR REPLACE FUNCTION meeting_join_candidates(
    p_region text, p_stale_seconds double precision, p_per_minute integer, p_window_seconds double precision,
    p_reserve integer, p_limit integer
)
RETURNS TABLE (controller_id text, health_status text)
LANGUAGE sql VOLATILE AS $$
SELECT d.controller_id, d.health_status
FROM (
    SELECT k.controller_id, k.health_status, k.load, bool_or(k.health_status = 'healthy') OVER () AS any_healthy
    FROM (
        SELECT mc.controller_id::text, mc.health_status::text,
               (mc.current_meetings + mc.assigned_since_heartbeat)::double precision
                   / NULLIF(mc.max_meetings, 0)::double precision AS load
        FROM meeting_controllers mc
        WHERE mc.region = p_region AND mc.health_status IN ('healthy', 'degraded')
          AND mc.last_heartbeat_at > statement_timestamp() - make_interval(secs => p_stale_seconds)
          AND mc.current_meetings + mc.assigned_since_heartbeat < mc.max_meetings
          AND (p_per_minute = 0 OR mc.assignments_window_start IS NULL
               OR mc.assignments_window_start <= statement_timestamp() - make_interval(secs => p_window_seconds)
               OR mc.assignments_in_window < p_per_minute)
          AND (p_reserve = 0 OR mc.current_participants + mc.reserved_participants + p_reserve <= mc.max_participants)
        ORDER BY mc.health_status = 'healthy' DESC,
                 (mc.current_meetings + mc.assigned_since_heartbeat)::double precision
                     / NULLIF(mc.max_meetings, 0)::double precision,
                 mc.last_heartbeat_at DESC, mc.controller_id
        LIMIT p_limit
    ) k
) d
WHERE d.health_status = 'healthy' OR NOT d.any_healthy
ORDER BY -ln(1.0 - random()) / (1.0 - least(coalesce(d.load, 1.0), 0.99))
$$;
"""

# The meeting's active assignment in the region (see JOIN_FUNCTION on the plan), with its MC and media handlers.
ACTIVE_FUNCTION = r"""
CREATE OR REPLACE FUNCTION meeting_join_active(p_meeting_id uuid, p_region text, p_stale_seconds double precision)
RETURNS TABLE (id bigint, controller_id text, grpc_endpoint text, webtransport_endpoint text, health_status text,
               fresh boolean, pending boolean, media_handlers json)
LANGUAGE sql STABLE AS $$
WITH a AS MATERIALIZED (
    SELECT ma.id, ma.meeting_controller_id, ma.pending_until, ma.media_handler_ids, ma.ended_at
    FROM meeting_assignments ma
    WHERE ma.meeting_id = p_meeting_id AND ma.region = p_region
)
SELECT a.id, a.meeting_controller_id::text, mc.grpc_endpoint::text, mc.webtransport_endpoint::text,
       mc.health_status::text, mc.last_heartbeat_at > now() - make_interval(secs => p_stale_seconds),
       a.pending_until IS NOT NULL,
       CASE WHEN a.media_handler_ids IS NULL THEN NULL ELSE (
           SELECT json_agg(json_build_array(h.handler_id, coalesce(h.webtransport_endpoint, ''),
                                            coalesce(h.grpc_endpoint, ''))
                           ORDER BY array_position(a.media_handler_ids, h.handler_id))
           FROM media_handlers h WHERE h.handler_id = ANY(a.media_handler_ids)) END
FROM a
JOIN meeting_controllers mc ON mc.controller_id = a.meeting_controller_id
WHERE a.ended_at IS NULL
$$;
"""

JOIN_SIGNATURE = (
    "meeting_join(uuid, text, text, uuid, text, text, inet, text, text, double precision, boolean, text, integer, "
    "integer, double precision, integer, integer)"
)

JOIN_FUNCTION = r"""
CREATE OR REPLACE FUNCTION meeting_join(
    p_meeting_id uuid, p_meeting_code text, p_region text, p_user_id uuid, p_principal text,
    p_display_name text, p_ip_address inet, p_user_agent text, p_client_version text,
    p_stale_seconds double precision, p_place boolean, p_gc_id text, p_candidates integer, p_per_minute integer,
    p_window_seconds double precision, p_large_threshold integer, p_fresh_reads integer,
    OUT outcome text, OUT joiner_role text, OUT is_new boolean, OUT m meetings, OUT p meeting_participants,
    OUT a_id bigint, OUT a_controller_id text, OUT a_grpc_endpoint text, OUT a_webtransport_endpoint text,
    OUT a_health_status text, OUT a_fresh boolean, OUT a_pending boolean, OUT a_media_handlers json,
    OUT a_rule text, OUT a_assigned boolean
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    waits boolean;
    seats integer;
    guest_seats integer;
    usable boolean;
    reserve integer;
    cand_ids text[];
    cand_health text[];
    first_choice text;
    first_rule text;
    chosen text;
    chosen_health text;
    previous_controller text;
    new_id bigint;
    payload jsonb;
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

    SELECT * INTO a_id, a_controller_id, a_grpc_endpoint, a_webtransport_endpoint, a_health_status, a_fresh,
                  a_pending, a_media_handlers
    FROM meeting_join_active(m.meeting_id, p_region, p_stale_seconds);
    usable := FOUND AND a_fresh AND NOT a_pending;
    a_assigned := false;
    IF usable AND a_health_status = 'healthy' THEN
        a_rule := 'reused';
    ELSIF NOT p_place THEN
        outcome := 'assign';
        RETURN;
    ELSE
        reserve := CASE WHEN m.max_participants > p_large_threshold THEN m.max_participants ELSE 0 END;
        SELECT array_agg(c.controller_id), array_agg(c.health_status) INTO cand_ids, cand_health
        FROM meeting_join_candidates(p_region, p_stale_seconds, p_per_minute, p_window_seconds, reserve,
                                     p_candidates) c;
        IF usable AND a_health_status = 'degraded' AND coalesce(cand_health[1] <> 'healthy', true) THEN
            a_rule := 'degraded_fallback';
        ELSIF cand_ids IS NULL THEN
            outcome := 'no_capacity';
            RETURN;
        ELSE
            IF a_id IS NOT NULL THEN
                -- A reassignment writes two MC rows: both, and every candidate, locked in the flush's order first.
                PERFORM 1 FROM meeting_controllers mc WHERE mc.controller_id = ANY(cand_ids || a_controller_id)
                ORDER BY mc.controller_id FOR UPDATE;
                -- greatest(): an assignment committed after this transaction began has assigned_at after now().
                WITH ended AS (
                    UPDATE meeting_assignments ma SET ended_at = greatest(now(), ma.assigned_at),
                                                      end_reason = 'reassigned'
                    WHERE ma.id = a_id AND ma.ended_at IS NULL
                    RETURNING ma.meeting_controller_id, ma.reserved_participants
                ), released AS (
                    UPDATE meeting_controllers mc
                    SET assigned_since_heartbeat = greatest(mc.assigned_since_heartbeat - e.meetings, 0),
                        current_meetings = greatest(
                            mc.current_meetings - greatest(e.meetings - mc.assigned_since_heartbeat, 0), 0),
                        reserved_participants = greatest(mc.reserved_participants - e.participants, 0)
                    FROM (
                        SELECT en.meeting_controller_id, count(*) AS meetings,
                               coalesce(sum(en.reserved_participants), 0) AS participants
                        FROM ended en GROUP BY en.meeting_controller_id
                    ) e
                    WHERE mc.controller_id = e.meeting_controller_id
                    RETURNING mc.controller_id
                )
                SELECT ended.meeting_controller_id INTO previous_controller FROM ended;
            END IF;
            first_choice := cand_ids[1];
            first_rule := CASE WHEN cand_health[1] = 'healthy' THEN 'least_loaded' ELSE 'degraded_fallback' END;
            INSERT INTO meeting_assignments
                (meeting_id, meeting_controller_id, region, assigned_at, assigned_by_gc_id, reserved_participants,
                 pending_until, media_handler_ids)
            VALUES (m.meeting_id, first_choice, p_region, now(), p_gc_id, reserve, NULL, NULL)
            ON CONFLICT (meeting_id, region) WHERE ended_at IS NULL DO NOTHING
            RETURNING id INTO new_id;
            IF new_id IS NULL THEN
                -- A concurrent request assigned the meeting first; its choice stands.
                SELECT * INTO a_id, a_controller_id, a_grpc_endpoint, a_webtransport_endpoint, a_health_status,
                              a_fresh, a_pending, a_media_handlers
                FROM meeting_join_active(m.meeting_id, p_region, p_stale_seconds);
                IF NOT FOUND THEN
                    RAISE EXCEPTION USING ERRCODE = 'DTNC0', MESSAGE = first_rule;
                END IF;
                a_rule := 'reused';
            ELSE
                FOR attempt IN 0..p_fresh_reads LOOP
                    IF attempt > 0 THEN
                        -- Every candidate filled up since the read: read the region again before giving up.
                        SELECT array_agg(c.controller_id), array_agg(c.health_status) INTO cand_ids, cand_health
                        FROM meeting_join_candidates(p_region, p_stale_seconds, p_per_minute, p_window_seconds,
                                                     reserve, p_candidates) c;
                        EXIT WHEN cand_ids IS NULL;
                    END IF;
                    FOR i IN 1..array_length(cand_ids, 1) LOOP
                        -- The claim: compare-and-set on every rule of the candidate read, re-evaluated on the
                        -- newest row version when it waited for a concurrent claim of the same row.
                        UPDATE meeting_controllers mc
                        SET assigned_since_heartbeat = mc.assigned_since_heartbeat + 1,
                            reserved_participants = mc.reserved_participants + reserve,
                            assignments_window_start = CASE
                                WHEN mc.assignments_window_start > now() - make_interval(secs => p_window_seconds)
                                THEN mc.assignments_window_start ELSE now() END,
                            assignments_in_window = CASE
                                WHEN mc.assignments_window_start > now() - make_interval(secs => p_window_seconds)
                                THEN mc.assignments_in_window + 1 ELSE 1 END
                        WHERE mc.controller_id = cand_ids[i]
                          AND mc.current_meetings + mc.assigned_since_heartbeat < mc.max_meetings
                          AND mc.health_status IN ('healthy', 'degraded')
                          AND mc.last_heartbeat_at > now() - make_interval(secs => p_stale_seconds)
                          AND (p_per_minute = 0 OR mc.assignments_in_window < p_per_minute
                               OR NOT coalesce(mc.assignments_window_start
                                               > now() - make_interval(secs => p_window_seconds), false))
                          AND (reserve = 0
                               OR mc.current_participants + mc.reserved_participants + reserve <= mc.max_participants)
                        RETURNING mc.grpc_endpoint, mc.webtransport_endpoint
                        INTO a_grpc_endpoint, a_webtransport_endpoint;
                        IF FOUND THEN
                            chosen := cand_ids[i];
                            chosen_health := cand_health[i];
                            EXIT;
                        END IF;
                    END LOOP;
                    EXIT WHEN chosen IS NOT NULL;
                END LOOP;
                IF chosen IS NULL THEN
                    -- Raised, not answered: the old assignment's end and the new row roll back with it.
                    RAISE EXCEPTION USING ERRCODE = 'DTNC0', MESSAGE = first_rule;
                END IF;
                IF chosen <> first_choice THEN
                    UPDATE meeting_assignments ma SET meeting_controller_id = chosen WHERE ma.id = new_id;
                END IF;
                a_id := new_id;
                a_controller_id := chosen;
                a_health_status := chosen_health;
                a_media_handlers := NULL;
                a_rule := CASE WHEN chosen_health = 'healthy' THEN 'least_loaded' ELSE 'degraded_fallback' END;
                a_assigned := true;
                UPDATE meetings mt
                SET assigned_controller_id = chosen, assigned_region = p_region,
                    status = CASE WHEN mt.status = 'scheduled' THEN 'active' ELSE mt.status END,
                    actual_start_time = CASE WHEN mt.status = 'scheduled' THEN statement_timestamp()
                                             ELSE mt.actual_start_time END
                WHERE mt.meeting_id = m.meeting_id
                RETURNING * INTO m;
                payload := jsonb_build_object(
                    'meeting_id', m.meeting_id::text, 'region', p_region, 'controller_id', chosen,
                    'previous_controller_id', previous_controller, 'assignment_id', new_id,
                    'assigned_by_gc_id', p_gc_id, 'rule', a_rule, 'reserved_participants', reserve);
                INSERT INTO outbox_events
                    (aggregate_type, aggregate_id, event_type, payload, created_at, processed_at, attempts,
                     last_error, last_attempt_at, next_attempt_at, failed_at)
                VALUES ('meeting', m.meeting_id::text, 'meeting_assigned', payload, statement_timestamp(), NULL, 0,
                        NULL, NULL, NULL, NULL);
                INSERT INTO audit_logs
                    (event_type, actor_user_id, actor_type, target_type, target_id, action, result, error_message,
                     ip_address, user_agent, metadata, created_at)
                VALUES ('meeting_assigned', p_user_id, CASE WHEN p_user_id IS NULL THEN 'system' ELSE 'user' END,
                        'meeting', m.meeting_id::text, 'assign', 'success', NULL, NULL, NULL,
                        payload - 'meeting_id', statement_timestamp());
            END IF;
        END IF;
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
COMMENT ON FUNCTION """ + JOIN_SIGNATURE + """ IS
    'A join in one statement: lock, checks, seats, the active assignment reused or an MC claimed, participant, '
    'outbox and audit rows (meetings.services.participants.meeting_join; outcome assign: the caller asks the MC)';
"""  # noqa: S608 -- constants only

DROP_FUNCTIONS = f"""
DROP FUNCTION {JOIN_SIGNATURE};
DROP FUNCTION meeting_join_active(uuid, text, double precision);
DROP FUNCTION meeting_join_candidates(text, double precision, integer, double precision, integer, integer);
"""


class Migration(SafeMigration):

    # The SQL functions' bodies are checked when they are created: every table they read must exist by then.
    dependencies = [
        ('meetings', '0007_verbose_names'),
        ('controllers', '0012_verbose_names'),
        ('audit', '0007_verbose_names'),
        ('accounts', '0008_erasure_clears_audit_actor_details'),
    ]

    operations = [
        migrations.RunSQL(CANDIDATES_FUNCTION + ACTIVE_FUNCTION + JOIN_FUNCTION, DROP_FUNCTIONS),
    ]
