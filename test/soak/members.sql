-- like or unlike of member u1..u50 on key p1..p1000 of membership counter s_members; a row of +1 / -1 goes into mledger, in the same transaction, only when the call changed membership (returned true).
\set k random(1, 1000)
\set u random(1, 50)
\set op random(0, 1)
BEGIN;
\if :op
INSERT INTO mledger SELECT 'p' || :k, 'u' || :u, 1
 WHERE counter."like"('s_members', 'p' || :k, 'u' || :u);
\else
INSERT INTO mledger SELECT 'p' || :k, 'u' || :u, -1
 WHERE counter.unlike('s_members', 'p' || :k, 'u' || :u);
\endif
COMMIT;
