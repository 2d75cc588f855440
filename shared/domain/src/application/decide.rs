//! Decisions on an application: create, authorise, update, archive, restore, members.

use super::*;

impl Application {
    /// Decide a creation. The creator becomes primary owner; an OAuth application also asks for
    /// its client (`DcrRegistrationRequested`).
    pub fn create(
        cmd: CreateApplication,
        policy: &Policy,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        let mut errors = FieldErrors::new();
        if let Err((code, message)) = policy.settings.can_create(cmd.app_type) {
            errors.add("type", code, message);
        }
        if cmd.app_type.is_oauth() && cmd.client_id.is_some() {
            errors.add(
                "client_id",
                "client_id.not_applicable",
                "the client_id of an OAuth application is issued by the provider",
            );
        }
        if !cmd.app_type.is_oauth() && cmd.provider_id.is_some() {
            errors.add(
                "provider_id",
                "provider_id.not_applicable",
                "simple applications use no provider",
            );
        }
        if cmd
            .provider_id
            .as_ref()
            .is_some_and(|p| p.is_empty() || p.len() > MAX_PROVIDER_ID)
        {
            errors.add(
                "provider_id",
                "provider_id.invalid",
                format!("a provider id has 1 to {MAX_PROVIDER_ID} characters"),
            );
        }
        let oauth = check_oauth_settings(
            cmd.app_type,
            &cmd.redirect_uris,
            &cmd.grant_types,
            cmd.client_uri.as_ref(),
            cmd.logo_uri.as_ref(),
            policy,
            &mut errors,
        );
        errors.into_result()?;
        let is_oauth = cmd.app_type.is_oauth();
        let mut events = vec![ApplicationEvent::ApplicationCreated(ApplicationCreated {
            id: cmd.id,
            environment: cmd.environment,
            name: cmd.name,
            description: cmd.description,
            domain: cmd.domain,
            app_type: cmd.app_type,
            client_id: cmd.client_id,
            oauth,
            provider_id: cmd.provider_id.clone(),
            primary_owner: cmd.owner,
        })];
        if is_oauth {
            events.push(ApplicationEvent::DcrRegistrationRequested(
                DcrRegistrationRequested {
                    provider_id: cmd.provider_id,
                    attempt: 1,
                    reason: RegistrationReason::Created,
                },
            ));
        }
        Ok(events)
    }

    /// The role a user holds, if any.
    pub fn role_of(&self, user: &UserId) -> Option<Role> {
        self.members.get(user).copied()
    }

    pub fn primary_owner(&self) -> Option<&UserId> {
        self.members
            .iter()
            .find(|(_, r)| **r == Role::PrimaryOwner)
            .map(|(u, _)| u)
    }

    /// Authorise an operation: administrators may do everything; an archived application is
    /// visible to administrators only; a non-member gets `NotFound` (the application's existence
    /// is not revealed), a member without the permission `Forbidden`.
    pub fn authorize(
        &self,
        actor: &Actor,
        permission: Permission,
        op: Operation,
    ) -> Result<(), DomainError> {
        if actor.admin {
            return Ok(());
        }
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::NotFound);
        }
        match self.role_of(&actor.user) {
            None => Err(DomainError::NotFound),
            Some(role) if allows(role, permission, op) => Ok(()),
            Some(_) => Err(DomainError::Forbidden(format!(
                "{}[{}]",
                permission.as_str(),
                op.letter()
            ))),
        }
    }

    /// Decide an update of the definition. Nothing changes → no event.
    pub fn update(
        &self,
        cmd: UpdateApplication,
        policy: &Policy,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::Archived);
        }
        let mut errors = FieldErrors::new();
        if self.app_type.is_oauth() && !cmd.client_id.is_keep() {
            errors.add(
                "client_id",
                "client_id.not_applicable",
                "the client_id of an OAuth application is issued by the provider",
            );
        }
        let current = self.oauth.clone();
        let oauth = if self.app_type.is_oauth() {
            let cur = current.clone().unwrap_or(OAuthSettings {
                redirect_uris: vec![],
                grant_types: vec![],
                response_types: vec![],
                client_uri: None,
                logo_uri: None,
            });
            let uris = cmd
                .redirect_uris
                .clone()
                .unwrap_or(cur.redirect_uris.clone());
            let grants = cmd.grant_types.clone().unwrap_or(cur.grant_types.clone());
            let client_uri = cmd.client_uri.apply(&cur.client_uri);
            let logo_uri = cmd.logo_uri.apply(&cur.logo_uri);
            check_oauth_settings(
                self.app_type,
                &uris,
                &grants,
                client_uri.as_ref(),
                logo_uri.as_ref(),
                policy,
                &mut errors,
            )
        } else {
            check_oauth_settings(
                self.app_type,
                cmd.redirect_uris.as_deref().unwrap_or(&[]),
                cmd.grant_types.as_deref().unwrap_or(&[]),
                match &cmd.client_uri {
                    Patch::Set(u) => Some(u),
                    _ => None,
                },
                match &cmd.logo_uri {
                    Patch::Set(u) => Some(u),
                    _ => None,
                },
                policy,
                &mut errors,
            )
        };
        errors.into_result()?;

        let name = cmd.name.unwrap_or_else(|| self.name.clone());
        let description = cmd.description.apply(&self.description);
        let domain = cmd.domain.apply(&self.domain);
        let client_id = cmd.client_id.apply(&self.client_id);
        let mut changed = Vec::new();
        if name != self.name {
            changed.push("name");
        }
        if description != self.description {
            changed.push("description");
        }
        if domain != self.domain {
            changed.push("domain");
        }
        if client_id != self.client_id {
            changed.push("client_id");
        }
        if let (Some(new), Some(old)) = (&oauth, &current) {
            if new.redirect_uris != old.redirect_uris {
                changed.push("redirect_uris");
            }
            if new.grant_types != old.grant_types {
                changed.push("grant_types");
            }
            if new.client_uri != old.client_uri {
                changed.push("client_uri");
            }
            if new.logo_uri != old.logo_uri {
                changed.push("logo_uri");
            }
        }
        if changed.is_empty() {
            return Ok(vec![]);
        }
        // What the provider holds of a registered client follows the application (RFC 7592).
        let for_provider: Vec<String> = changed
            .iter()
            .filter(|c| PROVIDER_FIELDS.contains(c))
            .map(|c| c.to_string())
            .collect();
        let registered = self
            .registration
            .as_ref()
            .is_some_and(|r| r.state == RegistrationState::Registered && !r.client_deleted);
        let mut events = vec![ApplicationEvent::ApplicationUpdated(ApplicationUpdated {
            name,
            description,
            domain,
            client_id,
            oauth,
            changed: changed.into_iter().map(String::from).collect(),
        })];
        if registered && !for_provider.is_empty() {
            // A client update would supersede a pending secret renewal, whose answer (a secret
            // already issued) would then be refused as stale.
            let renewing = self
                .registration
                .as_ref()
                .and_then(|r| r.operation.as_ref())
                .is_some_and(|o| {
                    o.kind == ClientOperationKind::RenewSecret && o.state == OperationState::Pending
                });
            if renewing {
                return Err(DomainError::OperationPending);
            }
            events.push(ApplicationEvent::DcrClientUpdateRequested(
                DcrClientUpdateRequested {
                    changed: for_provider,
                },
            ));
        }
        Ok(events)
    }

    /// Decide an archive: the primary-owner link is dropped.
    pub fn archive(&self) -> Result<Vec<ApplicationEvent>, DomainError> {
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::Archived);
        }
        Ok(vec![ApplicationEvent::ApplicationArchived(
            ApplicationArchived {
                former_primary_owner: self.primary_owner().cloned(),
            },
        )])
    }

    /// Decide a restore, by an administrator, who becomes primary owner.
    pub fn restore(&self, actor: &Actor) -> Result<Vec<ApplicationEvent>, DomainError> {
        if !actor.admin {
            return Err(DomainError::AdminOnly);
        }
        if self.status == ApplicationStatus::Active {
            return Err(DomainError::NotArchived);
        }
        let mut events = vec![ApplicationEvent::ApplicationRestored(ApplicationRestored {
            primary_owner: actor.user.clone(),
        })];
        // A client deleted at the archive is registered anew; so is one whose request was still
        // unanswered at the archive (the saga's answer is refused while archived, so the old
        // request would never be answered).
        if let Some(r) = self
            .registration
            .as_ref()
            .filter(|r| r.client_deleted || r.state == RegistrationState::Registering)
        {
            events.push(ApplicationEvent::DcrRegistrationRequested(
                DcrRegistrationRequested {
                    provider_id: self.provider_id.clone(),
                    attempt: r.attempt.saturating_add(1),
                    reason: RegistrationReason::Restored,
                },
            ));
        }
        Ok(events)
    }

    fn active(&self) -> Result<(), DomainError> {
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::Archived);
        }
        Ok(())
    }

    /// Decide adding a member. The primary owner is only ever set by a transfer.
    pub fn add_member(
        &self,
        user: UserId,
        role: Role,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        self.active()?;
        if role == Role::PrimaryOwner {
            return Err(role_error());
        }
        if self.members.contains_key(&user) {
            return Err(DomainError::MemberExists);
        }
        if self.members.len() >= MAX_MEMBERS {
            return Err(DomainError::TooManyMembers);
        }
        Ok(vec![ApplicationEvent::MemberAdded(MemberAdded {
            user,
            role,
        })])
    }

    /// Decide changing a member's role; the same role again changes nothing.
    pub fn change_member_role(
        &self,
        user: UserId,
        role: Role,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        self.active()?;
        if role == Role::PrimaryOwner {
            return Err(role_error());
        }
        let from = self.role_of(&user).ok_or(DomainError::MemberNotFound)?;
        if from == Role::PrimaryOwner {
            return Err(DomainError::PrimaryOwnerImmutable);
        }
        if from == role {
            return Ok(vec![]);
        }
        Ok(vec![ApplicationEvent::MemberRoleChanged(
            MemberRoleChanged {
                user,
                from,
                to: role,
            },
        )])
    }

    /// Decide removing a member; the primary owner cannot be removed.
    pub fn remove_member(&self, user: UserId) -> Result<Vec<ApplicationEvent>, DomainError> {
        self.active()?;
        let role = self.role_of(&user).ok_or(DomainError::MemberNotFound)?;
        if role == Role::PrimaryOwner {
            return Err(DomainError::PrimaryOwnerImmutable);
        }
        Ok(vec![ApplicationEvent::MemberRemoved(MemberRemoved {
            user,
            role,
        })])
    }

    /// Decide a transfer of primary ownership, by a member with MEMBER[U] (the primary owner or
    /// an OWNER: the seed gives an owner every right but delete, and Gravitee checks MEMBER[U])
    /// or an administrator. The new primary owner may or may not be a member yet; the former one
    /// keeps `former_owner_role`.
    pub fn transfer_ownership(
        &self,
        actor: &Actor,
        to: UserId,
        former_owner_role: Role,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        self.active()?;
        self.authorize(actor, Permission::Member, Operation::Update)?;
        let from = self.primary_owner().cloned();
        if former_owner_role == Role::PrimaryOwner {
            let mut e = FieldErrors::new();
            e.add(
                "former_owner_role",
                "role.invalid",
                "the former primary owner becomes OWNER or USER",
            );
            return Err(DomainError::Invalid(e));
        }
        if from.as_ref() == Some(&to) {
            return Err(DomainError::AlreadyPrimaryOwner);
        }
        Ok(vec![ApplicationEvent::PrimaryOwnershipTransferred(
            PrimaryOwnershipTransferred {
                from,
                to,
                former_owner_role,
            },
        )])
    }
}
