import importlib

from django.db import migrations

from darktower.migration import SafeMigration

# The candidate read of a join's placement (meeting_join, meetings 0008, which states the join's rules) planned
# once per session and reading only the region's rows, whatever statistics the planner has.
#
# meeting_join_candidates is a STABLE SQL function with one SELECT, which the planner inlines into meeting_join's
# statement: PL/pgSQL keeps that statement's plan for the session, where a VOLATILE function (0008's, which drew
# at random inside) is planned again on every call, with its parameters unknown. The random draw is now made by
# the caller, over the candidates the function returns with their load ratio: the same exponential race with rate
# 1 - min(load ratio, 0.99), so the same order as repeated weighted draws without replacement.
#
# The heartbeat's age is a filter, written so that no index on last_heartbeat_at can serve it: every placeable MC
# beats, so that condition keeps the whole fleet, and a plan made without the region's value (a generic plan) that
# took it as the index condition would read every MC of every region. The region is the only index condition
# (idx_meeting_controllers_available: the region's placeable rows).

_0008 = importlib.import_module("meetings.migrations.0008_meeting_join_function")
JOIN_SIGNATURE = _0008.JOIN_SIGNATURE

# squawk: ban-drop-function: its one caller is meeting_join, replaced in the same transaction; no client calls it
# The candidates of a placement: the first p_limit of the region's placeable MCs by "healthy first, then the
# effective load ratio, ties to the newest heartbeat", only the healthy ones when any, with their load ratio.
CANDIDATES_FUNCTION = r"""
DROP FUNCTION meeting_join_candidates(text, double precision, integer, double precision, integer, integer);
CREATE FUNCTION meeting_join_candidates(
    p_region text, p_stale_seconds double precision, p_per_minute integer, p_window_seconds double precision,
    p_reserve integer, p_limit integer
)
RETURNS TABLE (controller_id text, health_status text, load double precision)
LANGUAGE sql STABLE AS $$
SELECT k.controller_id, k.health_status, k.load
FROM (
    SELECT c.controller_id, c.health_status, c.load, bool_or(c.health_status = 'healthy') OVER () AS any_healthy
    FROM (
        SELECT mc.controller_id::text, mc.health_status::text,
               (mc.current_meetings + mc.assigned_since_heartbeat)::double precision
                   / NULLIF(mc.max_meetings, 0)::double precision AS load
        FROM meeting_controllers mc
        WHERE mc.region = p_region AND mc.health_status IN ('healthy', 'degraded')
          AND mc.last_heartbeat_at + make_interval(secs => p_stale_seconds) > statement_timestamp()
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
    ) c
) k
WHERE k.health_status = 'healthy' OR NOT k.any_healthy
$$;
"""

# meeting_join as in 0008, but for its two candidate reads, which draw at random over the candidates returned.
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
        SELECT array_agg(d.controller_id), array_agg(d.health_status) INTO cand_ids, cand_health
        FROM (SELECT c.controller_id, c.health_status
              FROM meeting_join_candidates(p_region, p_stale_seconds, p_per_minute, p_window_seconds, reserve,
                                           p_candidates) c
              ORDER BY -ln(1.0 - random()) / (1.0 - least(coalesce(c.load, 1.0), 0.99))) d;
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
                        SELECT array_agg(d.controller_id), array_agg(d.health_status) INTO cand_ids, cand_health
                        FROM (SELECT c.controller_id, c.health_status
                              FROM meeting_join_candidates(p_region, p_stale_seconds, p_per_minute,
                                                           p_window_seconds, reserve, p_candidates) c
                              ORDER BY -ln(1.0 - random()) / (1.0 - least(coalesce(c.load, 1.0), 0.99))) d;
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

# Back to 0008's functions: its candidates function (a VOLATILE one that draws) and its join function.
REVERSE = (
    "DROP FUNCTION meeting_join_candidates(text, double precision, integer, double precision, integer, integer);"
    + _0008.CANDIDATES_FUNCTION.replace("CREATE OR REPLACE FUNCTION", "CREATE FUNCTION", 1)
    + _0008.JOIN_FUNCTION
)


class Migration(SafeMigration):

    dependencies = [
        ('meetings', '0008_meeting_join_function'),
    ]

    operations = [
        migrations.RunSQL(CANDIDATES_FUNCTION + JOIN_FUNCTION, REVERSE),
    ]
